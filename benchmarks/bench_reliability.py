"""Reliability figures of the operated stack (README "Reliability"), on a stack of its own.

1. kill -9 of the GPU worker *and* its flow-run process mid-SFT (a dead machine, not a clean
   stop), wait for the zombie automation to mark the run Crashed, start a new worker, and
   `prefect flow-run retry`: which phases ran again (target: only the interrupted SFT), and
   whether every file the job had written before the kill is still there, unchanged.
2. Two jobs of the weekly request (the `train/weekly-job` deployment) triggered at once: the peak number
   of GPU-tagged task runs running at the same moment, from Prefect's own task-run timestamps
   (target 1).

    python benchmarks/bench_reliability.py            # tiny random model (about 6 min)
    python benchmarks/bench_reliability.py --model builtin:smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _bench import isolate, run

TMP = isolate("reliability")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _request(model: str, iterations: int) -> dict:
    return {
        "model_id": model,
        "n_questions": 8,
        "top_k": 2,
        "seed": 3,
        "irs_config": {
            "n_iterations": iterations,
            "n_candidates": 4,
            "max_new_tokens": 24,
            "batch_size": 2,
            "learning_rate": 1e-3,
            "sft_epochs": 6,
            "max_seq_length": 2048,
            "gen_batch_size": 8,
        },
    }


def _wait_state(client, run_id, wanted: set[str], timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = client.read_flow_run(run_id).state.type.value
        if state in wanted:
            return state
        time.sleep(0.5)
    raise TimeoutError(f"flow run {run_id} not in {wanted} after {timeout:.0f} s")


def _task_runs(client, name_like: str, since: datetime | None = None):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter

    flows = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name_like)))
    trf = TaskRunFilter(start_time={"after_": since}) if since else None
    return client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [f.id for f in flows]}), task_run_filter=trf)


def kill_worker_mid_sft(st, model: str) -> None:
    from prefect import get_client
    from prefect.deployments import run_deployment

    from deployments.stack import POOLS, spawn_worker, stack_env
    from irsflow.jobs.job import create_job
    from irsflow.store import hash_path

    store = create_job(_request(model, 2))
    run = run_deployment("train/manual", parameters={"request": None, "job_id": store.job_id}, timeout=0)
    while not (
        store.read_status().get("current_round") == 2 and store.read_status().get("current_phase") == "TRAINING"
    ):
        time.sleep(0.05)
    before = {
        p: hash_path(p)
        for p in store.dir.rglob("*")
        if p.is_file() and p.name not in ("status.json", "metrics.jsonl", "train.log")
    }  # these three keep growing by design
    worker = st["procs"]["worker-gpu"]
    os.killpg(worker["pid"], signal.SIGKILL)
    os.kill(store.read_status()["pid"], signal.SIGKILL)
    killed = time.time()
    with get_client(sync_client=True) as client:
        _wait_state(client, run.id, {"CRASHED"}, 300)
        crashed_after = time.time() - killed
        st["procs"]["worker-gpu"] = spawn_worker("gpu", stack_env(st["api_url"]))
        retried = datetime.now(UTC)
        subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), "flow-run", "retry", str(run.id)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        _wait_state(client, run.id, {"COMPLETED"}, 600)
        runs = _task_runs(client, store.job_id, since=retried)
    recomputed = sorted(t.name for t in runs if t.state.name != "Cached")
    cached = sorted(t.name for t in runs if t.state.name == "Cached")
    lost = [str(p.relative_to(store.dir)) for p in before if not p.exists()]
    changed = [str(p.relative_to(store.dir)) for p, h in before.items() if p.exists() and hash_path(p) != h]
    print(f"kill -9 of the gpu worker + its flow run at iteration 2 SFT ({len(POOLS)} pools up):")
    print(f"  zombie automation marked the run Crashed after {crashed_after:.0f} s")
    print(f"  after retry, recomputed: {', '.join(recomputed) or 'nothing'} (target: sft-iter-2)")
    print(f"  cached: {', '.join(cached)}")
    print(
        f"  files written before the kill: {len(before)}, lost: {len(lost)} {lost or ''}; rewritten: {changed} "
        "(by design: the phase manifest and the trend chart grow as phases finish)"
    )


def two_weekly_jobs(model: str) -> None:
    from prefect import get_client
    from prefect.deployments import run_deployment

    params = {"request": _request(model, 1)}
    runs = [run_deployment("train/weekly-job", parameters=params, timeout=0) for _ in range(2)]
    t0 = datetime.now(UTC)
    with get_client(sync_client=True) as client:
        for r in runs:
            _wait_state(client, r.id, {"COMPLETED"}, 900)
        trs = [t for t in _task_runs(client, "-iter-", since=t0) if "gpu" in t.tags and t.start_time and t.end_time]
        flows = [client.read_flow_run(r.id) for r in runs]
    events = sorted([(t.start_time, 1) for t in trs] + [(t.end_time, -1) for t in trs])
    peak = cur = 0
    for _, step in events:
        cur += step
        peak = max(peak, cur)
    overlap = min(f.end_time for f in flows) > max(f.start_time for f in flows)
    print(
        f"two weekly-request jobs triggered at once: {len(trs)} gpu task runs, peak running at once = {peak} "
        f"(target 1); the two flow runs overlapped: {overlap} (gpu pool concurrency 1 queues the second)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model id (default: a tiny random model built here)")
    args = ap.parse_args()
    from deployments.stack import _stop_all, up
    from irsflow.models.tiny import build_tiny_model

    model = args.model or str(build_tiny_model(Path(TMP) / "tiny", seed=0))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["PREFECT_WORKER_QUERY_SECONDS"] = "2"
    from prefect.settings import PREFECT_API_URL, temporary_settings

    st = up(port=port)
    try:
        with temporary_settings({PREFECT_API_URL: st["api_url"]}):
            kill_worker_mid_sft(st, model)
            two_weekly_jobs(model)
    finally:
        _stop_all(st["procs"])


if __name__ == "__main__":
    run(main, TMP)
