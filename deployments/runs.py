"""Flow runs of a job: is its last run really still going, and if its process died, say so to
Prefect (a Running run whose process is gone blocks a retry and looks alive in the UI).

    release_dead_run(store)          # before `irsflow rerun`; raises if the run is alive
"""

from __future__ import annotations

import socket

from irsflow.errors import InputError
from irsflow.jobs.job import process_alive
from irsflow.store import JobStore

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def release_dead_run(store: JobStore, force: bool = False) -> str | None:
    """If the job's status says running: refuse when its process (same host) is alive; otherwise
    mark its flow run Crashed so Prefect and the UI agree with reality. Returns what was done."""
    status = store.read_status()
    if status.get("state") not in ("running", "queued"):
        return None
    if status.get("state") == "queued" and not force:
        raise InputError(
            f"job {store.job_id}: queued as flow run {status.get('flow_run_id')}; wait for a worker "
            "to pick it up, or cancel that run first (or pass --force)"
        )
    same_host = status.get("host") == socket.gethostname()
    if same_host and process_alive(status.get("pid")):
        raise InputError(f"job {store.job_id}: still running in pid {status['pid']}; wait for it or stop it first")
    if not same_host and status.get("state") == "running" and not force:
        raise InputError(
            f"job {store.job_id}: was running on host {status.get('host')!r}; if that run is dead "
            "(its flow run turns Crashed within ~2 min of its last heartbeat) pass --force"
        )
    run_id = status.get("flow_run_id")
    if not run_id:
        return None
    from prefect import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.type.value in TERMINAL:
            return None
        client.set_flow_run_state(run_id, Crashed(message="its process is gone; resumed by irsflow rerun"), force=True)
    store.update_status(state="failed", error=status.get("error") or "the job's process died")
    return f"marked flow run {run_id} Crashed"
