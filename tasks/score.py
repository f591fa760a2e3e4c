"""CPU task: score candidates with the DW-GRPO rewards, select the best, update the weights."""
from __future__ import annotations

from irsflow.resume import SCORING
from tasks.common import CPU_TAG, phase_task
from tasks.phase import run_phase_task


@phase_task(SCORING, CPU_TAG, "score")
def score(job_id: str, iteration: int) -> dict:
    return run_phase_task(job_id, iteration, SCORING)
