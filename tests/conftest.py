"""Test session setup: offline, isolated data/Prefect homes, one real Prefect server on 127.0.0.1,
the shared fixtures, and a marker per tier from the folder a test lives in.

    tests/unit/    no Prefect server, no outside service, no model but the tiny one   (marker unit)
    tests/models/  the real embedded models (SmolLM2 converted from its GGUF)        (marker models)
    tests/flows/   flows against the session's Prefect server                          (marker flows)
    tests/ops/     the stack and its workers, crashes, the browser, the Docker files,
                   real outside services (vLLM, MLflow, Label Studio)                  (marker ops)
    tests/support/ helpers shared by every tier: ``from tests.support.<module> import ...``

    make test-fast                 # the unit tier
    .venv/bin/python -m pytest -q tests/flows     # or -m flows, -m "not ops", ...

Environment is set before anything imports Prefect or transformers."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

_SESSION = Path(tempfile.mkdtemp(prefix="irsflow-tests-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "IRSFLOW_DATA_DIR": str(_SESSION / "data"),
        "PREFECT_HOME": str(_SESSION / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the operator's allowances, as a test session needs them: requests name files under the temp dir
        # (tmp_path), and the teacher is a fake OpenAI server on 127.0.0.1 (tests of the refusals unset these)
        "IRSFLOW_ALLOWED_ROOTS": os.path.realpath(tempfile.gettempdir()),
        "IRSFLOW_WRITABLE_ROOTS": os.path.realpath(tempfile.gettempdir()),
        "IRSFLOW_TEACHER_ALLOWED_HOSTS": "127.0.0.1",
    }
)
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402

from tests.support.local import VENV_BIN, free_port  # noqa: E402

TIERS = ("unit", "models", "flows", "ops")
# Fixtures that start a Prefect server: a test that takes one is not a unit test.
SERVER_FIXTURES = {"prefect_server", "stack"}


def pytest_collection_modifyitems(config, items):
    """Mark every test by its tier folder (tests/<tier>/...), so ``-m unit`` and ``tests/unit`` pick
    the same tests; refuse a unit test that starts a Prefect server."""
    tests_dir = Path(__file__).resolve().parent
    misplaced = []
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "unit" and SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "unit tests may not start a Prefect server (fixtures "
            f"{sorted(SERVER_FIXTURES)}); move them to tests/flows or tests/ops: {misplaced}"
        )


@pytest.fixture(scope="session")
def prefect_server():
    """A real `prefect server start` (SQLite under PREFECT_HOME); PREFECT_API_URL points at it."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(_SESSION / "prefect-server.log", "w")
    # PREFECT_UI_API_URL: with --port alone the UI's /ui-settings still says :4200, and the browser calls that.
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_UI_API_URL": url},
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {(_SESSION / 'prefect-server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("prefect server did not become healthy in 90 s")
    os.environ["PREFECT_API_URL"] = url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        yield url
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send buffered run logs before the server goes away
    os.environ.pop("PREFECT_API_URL", None)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from irsflow.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture()
def data_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("IRSFLOW_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def stack(prefect_server, tmp_path_factory):
    """`irsflow up --api-url <test server>`: the gpu/cpu process pools, the gpu tag limit, every
    deployment in prefect.yaml and one real worker per pool, sharing one data dir with the tests
    that use it (as production shares one volume). Yields the stack state plus ``data_dir``."""
    from deployments import stack as st

    data = tmp_path_factory.mktemp("stack-data")
    old = os.environ.get("IRSFLOW_DATA_DIR")
    os.environ.update({"IRSFLOW_DATA_DIR": str(data), "PREFECT_WORKER_QUERY_SECONDS": "2"})
    try:
        state = st.up(api_url=prefect_server)
    finally:
        os.environ["IRSFLOW_DATA_DIR"] = old or ""
        os.environ.pop("PREFECT_WORKER_QUERY_SECONDS", None)
    try:
        yield {**state, "data_dir": data}
    finally:
        _cancel_live_runs()
        st._stop_all(state["procs"])


def _cancel_live_runs() -> None:
    """Flow runs live in sessions of their own: cancel any still going before the workers stop."""
    from prefect import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        for r in client.read_flow_runs(limit=200):
            if r.state and not r.state.is_final():
                client.set_flow_run_state(r.id, Cancelled(message="test session ended"), force=True)
