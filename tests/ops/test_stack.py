"""The operated stack: `irsflow up`/`down` by PID, and a deployment run whose process is killed
mid-SFT resuming at that SFT through `prefect flow-run retry` (what the UI's Retry does)."""

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prefect import get_client
from prefect.deployments import run_deployment

from deployments.stack import alive
from irsflow.jobs.job import create_job
from tests.support.jobs import tiny_request
from tests.support.local import ROOT, VENV_BIN, free_port
from tests.support.prefect_runs import task_runs_after, wait_crashed


def irsflow(args, env, timeout=300):
    return subprocess.run(
        [str(VENV_BIN / "irsflow"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_up_starts_the_stack_and_down_stops_exactly_it(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env.update(IRSFLOW_DATA_DIR=str(tmp_path / "data"))
    decoy = subprocess.Popen(["sleep", "300"], start_new_session=True)  # not ours: must survive `down`
    try:
        out = irsflow(["up", "--port", str(port)], env)
        assert out.returncode == 0, out.stdout + out.stderr
        state = json.loads((tmp_path / "data" / "stack" / "stack.json").read_text())
        assert set(state["procs"]) == {"server", "worker-gpu", "worker-cpu"}
        assert all(alive(p["pid"], p["cmdline"]) for p in state["procs"].values())
        assert (tmp_path / "data" / "prefect" / "prefect.db").is_file(), "SQLite lives under the data dir"
        api = f"http://127.0.0.1:{port}/api"
        assert f"Prefect UI:  http://127.0.0.1:{port}" in out.stdout
        deps = httpx.post(f"{api}/deployments/filter", json={}).json()
        assert {d["name"] for d in deps} >= {"manual", "weekly-job", "redo"}
        deadline = time.time() + 60  # workers register themselves with a heartbeat after start-up
        while time.time() < deadline:
            workers = {p: httpx.post(f"{api}/work_pools/{p}/workers/filter", json={}).json() for p in ("gpu", "cpu")}
            if all(w and w[0]["status"] == "ONLINE" for w in workers.values()):
                break
            time.sleep(1)
        assert all(w and w[0]["status"] == "ONLINE" for w in workers.values()), workers
        again = irsflow(["up", "--port", str(port)], env)
        assert again.returncode == 0 and "reusing" in again.stdout, again.stdout + again.stderr
        down = irsflow(["down"], env)
        assert down.returncode == 0, down.stderr
        assert not any(alive(p["pid"], p["cmdline"]) for p in state["procs"].values())
        assert decoy.poll() is None, "down stopped a process it did not start"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{api}/health", timeout=2)
    finally:
        decoy.kill()
        irsflow(["down"], env)


@pytest.mark.slow
def test_killed_mid_sft_then_prefect_retry_resumes_at_that_sft(stack, tiny_model):
    os.environ["IRSFLOW_DATA_DIR"] = str(stack["data_dir"])
    store = create_job(tiny_request(tiny_model, n_questions=8, irs_config={"sft_epochs": 6}))
    run = run_deployment("train/manual", parameters={"request": None, "job_id": store.job_id}, timeout=0)
    deadline = time.time() + 300
    while time.time() < deadline:
        s = store.read_status()
        if s.get("current_round") == 2 and s.get("current_phase") == "TRAINING":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"never reached iteration 2 SFT: {store.read_status()}")
    os.kill(s["pid"], signal.SIGKILL)  # the flow-run process, as the kernel's OOM killer would
    wait_crashed(run.id, Path(stack["procs"]["worker-gpu"]["log"]))
    assert not store.checkpoint(2).exists()

    retried_at = datetime.now(UTC)
    out = subprocess.run(
        [str(VENV_BIN / "prefect"), "flow-run", "retry", str(run.id)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    with get_client(sync_client=True) as client:
        deadline = time.time() + 300
        while (state := client.read_flow_run(run.id).state).type.value != "COMPLETED":
            assert time.time() < deadline and state.type.value not in ("FAILED", "CRASHED"), state
            time.sleep(1)
    states = task_runs_after(store.job_id, retried_at)
    assert states == {
        "generate-iter-1": "Cached",
        "score-iter-1": "Cached",
        "sft-iter-1": "Cached",
        "generate-iter-2": "Cached",
        "score-iter-2": "Cached",
        "sft-iter-2": "Completed",
    }, states
    assert store.read_status()["state"] == "completed" and (store.checkpoint("final") / "adapter_config.json").exists()
