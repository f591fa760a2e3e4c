"""The job API (deployments/api.py) over real HTTP: the app runs as `python -m deployments.api` on a
free 127.0.0.1 port against the session's real Prefect server; one training job runs end to end
through a real process worker.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/ops/test_api.py -x
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.jobs import tiny_request
from tests.support.local import ROOT, free_port, stop_group
from tests.support.real_services import listening_addresses

TOKEN = "test-token-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEPLOYMENT = "train/manual"


def _stop(proc: subprocess.Popen) -> None:
    stop_group(proc, 20)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def start_api(prefect_url: str, data_dir: Path, log: Path, deployment: str = DEPLOYMENT):
    port = free_port()
    env = {**os.environ, "IRSFLOW_API_TOKEN": TOKEN, "IRSFLOW_DATA_DIR": str(data_dir), "PREFECT_API_URL": prefect_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.api", "--port", str(port), "--deployment", deployment],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(f"{base}/api/health", timeout=5)
            return proc, base
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise RuntimeError(f"API exited: {_tail(log)}") from None
            time.sleep(0.3)
    _stop(proc)
    raise RuntimeError(f"API did not answer in 60 s: {_tail(log)}")


@pytest.fixture(scope="module")
def job_data(stack) -> Path:
    """The data dir shared by the API and the stack's workers (as in production: one volume)."""
    return stack["data_dir"]


@pytest.fixture(scope="module")
def api(prefect_server, job_data, tmp_path_factory):
    log = tmp_path_factory.mktemp("api-log") / "api.log"
    proc, base = start_api(prefect_server, job_data, log)
    with httpx.Client(base_url=base, timeout=60) as client:
        client.log = log
        yield client
    _stop(proc)


@pytest.fixture(scope="module")
def train_stack(stack):
    return stack


def test_auth_is_required_and_health_is_open(api):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for method, path in (("GET", "/api/train/status/x1"), ("GET", "/api/train/x1/metrics"), ("POST", "/api/train")):
            r = api.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (headers, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    # The right token gets past auth (to a 404 for an unknown job).
    assert api.get("/api/train/status/x1", headers=AUTH).status_code == 404
    h = api.get("/api/health")
    assert h.status_code == 200, h.text
    assert h.json()["prefect"]["reachable"] is True
    assert TOKEN not in api.log.read_text()


def _api_cli(*args: str, token: str | None, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "IRSFLOW_API_TOKEN"}
    if token is not None:
        env["IRSFLOW_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "cli", "api", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_api_refuses_to_start_without_a_token_or_open_beyond_loopback():
    port = str(free_port())
    for args, token, needle in (
        ((), None, "IRSFLOW_API_TOKEN is not set"),
        ((), "", "IRSFLOW_API_TOKEN is not set"),
        (("--no-auth", "--host", "0.0.0.0"), None, "127.0.0.1 only"),
        (("--no-auth",), "tok", "--no-auth given but IRSFLOW_API_TOKEN is set"),
    ):
        r = _api_cli("--port", port, *args, token=token)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        with pytest.raises(httpx.HTTPError):  # nothing started listening
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)


def test_no_auth_serves_loopback_only_without_a_token(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "IRSFLOW_API_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--no-auth", "--port", str(port)],
        cwd=ROOT,
        env={**env, "IRSFLOW_DATA_DIR": str(tmp_path / "data")},
        stdout=(tmp_path / "api.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.time() + 60
        while True:
            try:
                r = httpx.get(f"{base}/api/train/status/x1", timeout=5)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.time() < deadline, _tail(tmp_path / "api.log")
                time.sleep(0.3)
        assert r.status_code == 404, r.text  # past auth without a header: an unknown job
        assert "--no-auth" in _tail(tmp_path / "api.log")
        assert listening_addresses(port) == {"127.0.0.1"}  # bound to loopback, not 0.0.0.0
    finally:
        _stop(proc)


def test_bad_body_is_422_naming_the_field(api, job_data):
    before = set(job_data.glob("jobs/*"))  # the stack's data dir: other tests' jobs may be there already
    r = api.post("/api/train", headers=AUTH, json={"irs_config": {"n_candidates": 1, "bogus": True}})
    assert r.status_code == 422, r.text
    problems = {p["field"]: p["message"] for p in r.json()["detail"]}
    assert problems == {"irs_config.n_candidates": "must be >= 2", "irs_config.bogus": "unknown field"}
    r = api.post("/api/train", headers={**AUTH, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "<body>"
    r = api.post("/api/train", headers=AUTH, json=[1, 2])
    assert r.status_code == 422 and "JSON object" in r.json()["detail"][0]["message"]
    assert set(job_data.glob("jobs/*")) == before


@pytest.mark.parametrize("job_id", ["nope", "train_", ".hidden", "a..b", "%2E%2E%2Fetc"])
def test_unknown_or_invalid_job_is_404(api, job_id):
    for path in (f"/api/train/status/{job_id}", f"/api/train/{job_id}/metrics"):
        r = api.get(path, headers=AUTH)
        assert r.status_code == 404, (path, r.text)
        # Our message (no server paths in it), or the router's when the decoded id has a "/".
        assert r.json()["detail"] in (f"no job {job_id!r}", "Not Found"), r.text


def test_prefect_states_map_to_job_states():
    from prefect import states

    from deployments.api import job_state

    cases = {
        "queued": [states.Scheduled(), states.Late(), states.Pending(), states.AwaitingRetry()],
        "running": [states.Running(), states.Retrying()],
        "completed": [states.Completed()],
        "failed": [states.Failed(), states.Crashed()],
        "cancelled": [states.Cancelled(), states.Cancelling()],
        "paused": [states.Paused(), states.Suspended()],
    }
    for expected, sts in cases.items():
        for st in sts:
            assert job_state(st.type.value) == expected, st.name


def test_the_deployment_setting_keeps_reading_its_old_variable_and_old_names(monkeypatch, caplog):
    from deployments.api import job_deployment

    monkeypatch.delenv("IRSFLOW_TRAIN_DEPLOYMENT", raising=False)
    monkeypatch.delenv("IRSFLOW_IRS_DEPLOYMENT", raising=False)
    assert job_deployment() == "train/manual" and job_deployment("train/weekly-job") == "train/weekly-job"
    monkeypatch.setenv("IRSFLOW_IRS_DEPLOYMENT", "train/dpo-pairs")  # set before the variable was renamed
    assert job_deployment() == "train/dpo-pairs"
    assert "IRSFLOW_IRS_DEPLOYMENT is the old name of IRSFLOW_TRAIN_DEPLOYMENT" in caplog.text
    monkeypatch.setenv("IRSFLOW_TRAIN_DEPLOYMENT", "train/grpo")  # the new variable wins
    assert job_deployment() == "train/grpo"
    # an old .env's value names the deployment `irsflow up` has since renamed
    monkeypatch.setenv("IRSFLOW_TRAIN_DEPLOYMENT", "irs-train/irs-manual")
    assert job_deployment() == "train/manual" and "deployment irs-train/irs-manual was renamed" in caplog.text


def test_a_library_error_names_the_request_field_as_a_body_writes_it():
    from deployments.api import preflight_problem
    from irsflow.errors import ConfigError

    err = ConfigError("irs_config.load_in_4bit: 4-bit loading needs a CUDA GPU")  # the attribute is `shared`
    assert preflight_problem(err) == {"field": "irs_config.load_in_4bit", "message": "4-bit loading needs a CUDA GPU"}


def test_unavailable_deployment_is_503_and_leaves_no_job_dir(prefect_server, tiny_model, tmp_path):
    from prefect import get_client

    name = f"api-missing-{uuid.uuid4().hex[:6]}"
    proc, base = start_api(prefect_server, tmp_path / "data", tmp_path / "api.log", deployment=f"train/{name}")
    try:
        body = tiny_request(tiny_model)
        r = httpx.post(f"{base}/api/train", headers=AUTH, json=body, timeout=60)
        assert r.status_code == 503 and "make up" in r.json()["detail"] and name in r.json()["detail"], r.text
        assert not (tmp_path / "data" / "jobs").exists()
        h = httpx.get(f"{base}/api/health", timeout=30).json()
        assert h["status"] == "degraded" and h["deployment"]["exists"] is False

        # A deployment that exists but refuses the run (its parameter schema requires something we
        # never send): the job dir was already written by then and must be removed again.
        with get_client(sync_client=True) as client:
            flow_id = client.create_flow_from_name("train")
            client.create_deployment(
                flow_id=flow_id,
                name=name,
                enforce_parameter_schema=True,
                parameter_openapi_schema={
                    "type": "object",
                    "required": ["other"],
                    "properties": {"other": {"type": "string"}},
                },
            )
        r = httpx.post(f"{base}/api/train", headers=AUTH, json=body, timeout=120)
        assert r.status_code == 503 and "could not create a flow run" in r.json()["detail"], r.text
        assert list((tmp_path / "data" / "jobs").glob("train_*")) == []
    finally:
        _stop(proc)
        with get_client(sync_client=True) as client:  # the session's server is shared: leave it as found
            for d in client.read_deployments():
                if d.name == name:
                    client.delete_deployment(d.id)


def test_job_end_to_end(api, train_stack, tiny_model, job_data, tmp_path):
    from deployments.stack import alive

    worker = train_stack["procs"]["worker-gpu"]
    before = set(job_data.glob("jobs/train_*"))
    # Preflight errors are 422 naming the field, and write nothing.
    for body, field in (
        (tiny_request(tmp_path / "no-such-model"), "model_id"),
        (tiny_request(tiny_model, dataset=str(tmp_path / "none.jsonl")), "dataset"),
    ):
        r = api.post("/api/train", headers=AUTH, json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text
    assert set(job_data.glob("jobs/train_*")) == before

    r = api.post("/api/train", headers=AUTH, json=tiny_request(tiny_model))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["job_id"] and job["flow_run_id"]
    assert r.headers["location"] == f"/api/train/status/{job['job_id']}"

    states, deadline = [], time.time() + 420
    while time.time() < deadline:
        st = api.get(f"/api/train/status/{job['job_id']}", headers=AUTH).json()
        if not states or states[-1] != st["state"]:
            states.append(st["state"])
        if st["state"] in ("completed", "failed", "cancelled"):
            break
        assert alive(worker["pid"]), _tail(Path(worker["log"]))
        time.sleep(1)
    assert st["state"] == "completed", (states, st, _tail(Path(worker["log"])))
    assert st["flow_run_id"] == job["flow_run_id"] and st["prefect_state"] == "Completed"
    assert set(states) <= {"queued", "running", "completed"} and states[0] in ("queued", "running"), states

    rows = api.get(f"/api/train/{job['job_id']}/metrics", headers=AUTH).json()
    metrics = [row for row in rows if row["phase"] == "METRICS"]
    assert [m["iter"] for m in metrics] == [1, 2]
    det = st["detail"]
    assert det["current_round"] == 2 and det["total_rounds"] == 2
    assert det["metrics"]["avg_reward"] == metrics[-1]["avg_reward"]
    assert set(det["metrics"]["current_weights"]) == {"rel", "faith", "conc"}
    assert st["job_id"] == job["job_id"] and st["stage"] == "IRS"

    # The run Prefect recorded is the API's: our deployment, our parameters.
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(job["flow_run_id"]))
        dep = client.read_deployment_by_name(DEPLOYMENT)
    assert run.deployment_id == dep.id and run.parameters["job_id"] == job["job_id"]
    assert run.parameters["request"]["irs_config"]["n_iterations"] == 2 and "api" in run.tags
    assert set(job_data.glob("jobs/train_*")) == before | {job_data / "jobs" / f"train_{job['job_id']}"}
