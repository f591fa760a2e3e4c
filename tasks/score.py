"""CPU task: score candidates with the DW-GRPO rewards, select the best, update the weights."""
from __future__ import annotations

from prefect import task

from irsflow.job import open_job
from irsflow.phases import run_score
from tasks.common import CPU_TAG, job_request


@task(name="score", tags=[CPU_TAG], task_run_name="score-iter-{iteration}")
def score(job_id: str, iteration: int, weights: dict[str, float], history: list[dict]) -> dict:
    return run_score(open_job(job_id), job_request(job_id), iteration, weights, history)
