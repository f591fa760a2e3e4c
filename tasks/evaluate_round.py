"""GPU task: a round's eval (eval_round_<n>.json + CHANGELOG.md line) with the round's new adapter."""
from __future__ import annotations

from irsflow.resume import EVALUATING
from tasks.common import GPU_TAG, phase_task
from tasks.phase import run_phase_task


@phase_task(EVALUATING, GPU_TAG, "evaluate-round")
def evaluate_round(job_id: str, iteration: int) -> dict:
    return run_phase_task(job_id, iteration, EVALUATING)
