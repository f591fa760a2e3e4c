"""Helpers for tests that crash a deployment run and retry it through a real worker."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter


def task_runs_after(name_like: str, since: datetime) -> dict[str, str]:
    """Task run name -> state name, for the flow runs whose name contains ``name_like``."""
    with get_client(sync_client=True) as client:
        flows = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name_like)))
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [f.id for f in flows]}),
            task_run_filter=TaskRunFilter(start_time={"after_": since}),
        )
    return {t.name: t.state.name for t in runs}


def wait_crashed(run_id, worker_log: Path, timeout: float = 60) -> None:
    """Wait until the worker reported the killed run Crashed. Prefect 3.8.8's worker proposes
    Crashed a second time a few seconds after its runner did; a retry landing in between is
    overwritten (seen under load). So also wait for the worker's own report in its log, or (when it
    found the run already Crashed and said nothing) 15 s of quiet."""
    with get_client(sync_client=True) as client:
        deadline = time.time() + timeout
        while client.read_flow_run(run_id).state.type.value != "CRASHED":  # the worker saw its child die
            assert time.time() < deadline, client.read_flow_run(run_id).state
            time.sleep(0.5)
    deadline = time.time() + 15
    while f"Reported flow run '{run_id}' as crashed: Flow run infrastructure" not in Path(worker_log).read_text():
        if time.time() > deadline:
            break
        time.sleep(0.5)
