"""GPU task: sample candidates for one iteration (loads the model, releases it before returning)."""
from __future__ import annotations

from prefect import task

from irsflow.job import open_job
from irsflow.phases import run_generate
from tasks.common import GPU_TAG, job_request


@task(name="generate", tags=[GPU_TAG], task_run_name="generate-iter-{iteration}")
def generate(job_id: str, iteration: int, adapter: str | None) -> dict:
    return run_generate(open_job(job_id), job_request(job_id), iteration, adapter)
