"""GPU task: LoRA SFT on the selected answers, continuing the previous iteration's adapter."""
from __future__ import annotations

from prefect import task

from irsflow.job import open_job
from irsflow.phases import run_sft
from tasks.common import GPU_TAG, job_request


@task(name="sft", tags=[GPU_TAG], task_run_name="sft-iter-{iteration}")
def sft(job_id: str, iteration: int, adapter_in: str | None) -> dict:
    return run_sft(open_job(job_id), job_request(job_id), iteration, adapter_in)
