"""The ``track-job`` task: a finished job recorded as an MLflow run."""

from __future__ import annotations

from prefect import task

from irsflow.jobs.job import open_job
from tasks.limits import CPU_TAG
from tasks.options import retry_if_transient


@task(name="track-job", tags=[CPU_TAG], retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient)
def track_job(job_id: str) -> str:
    """The finished job as an MLflow run (irsflow.release.registry); its id lands in status.json."""
    from irsflow.release.registry import Registry

    return Registry().log_job(open_job(job_id))
