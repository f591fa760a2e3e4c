"""GPU task: sample candidates for one iteration (loads the model, releases it before returning)."""
from __future__ import annotations

from irsflow.resume import GENERATING
from tasks.common import GPU_TAG, phase_task
from tasks.phase import run_phase_task


@phase_task(GENERATING, GPU_TAG, "generate")
def generate(job_id: str, iteration: int) -> dict:
    return run_phase_task(job_id, iteration, GENERATING)
