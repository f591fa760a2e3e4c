"""The body every phase task shares: run one phase of one round of the job's stage with live
progress (``irsflow.stages.run_phase``), then record the content hashes of what it wrote (so a
later cache hit can prove its files are still there)."""
from __future__ import annotations

from irsflow.job import open_job
from irsflow.resume import SCORING, TRAINING, phase_key, record_outputs, stage_phases
from irsflow.stages import run_phase
from tasks.artifacts import progress_updater
from tasks.common import job_request, teacher_key


def run_phase_task(job_id: str, iteration: int, phase: str) -> dict:
    store, req = open_job(job_id), job_request(job_id)
    with store.log_to_file():
        key = phase_key(store, req, iteration, phase)  # before running: the phase must not change its own inputs
        progress = progress_updater(store, iteration, phase, req.irs_config.n_iterations, stage_phases(req))
        scores_here = phase == SCORING or (phase == TRAINING and req.stage == "GRPO")
        key_ = teacher_key() if scores_here and req.uses_teacher() else None
        out = run_phase(store, req, iteration, phase, progress=progress, teacher_api_key=key_)
        record_outputs(store, iteration, phase, key)
    return {**out, "cache_key": key}
