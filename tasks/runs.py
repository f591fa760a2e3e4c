"""Ids for what a flow run writes, stable across retries of that run."""

from __future__ import annotations

from prefect import get_client


def stable_run_id() -> str:
    """An id for what this flow run writes that a retry of the run gets again: the run's creation
    time and id (the start time changes on a retry). Outside a run, a fresh id."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        from irsflow.store import new_job_id

        return new_job_id()
    with get_client(sync_client=True) as client:
        created = client.read_flow_run(run_id).created
    return f"{created:%Y%m%dT%H%M%SZ}-{run_id[:8]}"
