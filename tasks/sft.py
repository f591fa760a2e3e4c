"""GPU task: LoRA SFT on the selected answers, continuing the previous iteration's adapter."""
from __future__ import annotations

from irsflow.resume import TRAINING
from tasks.common import GPU_TAG, phase_task
from tasks.phase import run_phase_task


@phase_task(TRAINING, GPU_TAG, "sft")
def sft(job_id: str, iteration: int) -> dict:
    return run_phase_task(job_id, iteration, TRAINING)
