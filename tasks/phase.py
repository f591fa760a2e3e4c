"""The body every phase task shares: derive the iteration's inputs from the job dir, run the
library phase with live progress, then record the content hashes of what it wrote (so a later
cache hit can prove its files are still there)."""
from __future__ import annotations

from irsflow.job import open_job
from irsflow.phases import run_generate, run_score, run_sft
from irsflow.resume import GENERATING, SCORING, iteration_inputs, phase_key, record_outputs
from tasks.artifacts import progress_updater
from tasks.common import job_request, teacher_key


def run_phase_task(job_id: str, iteration: int, phase: str) -> dict:
    store, req = open_job(job_id), job_request(job_id)
    with store.log_to_file():
        key = phase_key(store, req, iteration, phase)  # before running: the phase must not change its own inputs
        inputs = iteration_inputs(store, req, iteration)
        progress = progress_updater(store, iteration, phase, req.irs_config.n_iterations)
        if phase == GENERATING:
            out = run_generate(store, req, iteration, inputs.adapter, progress=progress)
        elif phase == SCORING:
            key_ = teacher_key() if req.uses_teacher() else None
            out = run_score(store, req, iteration, inputs.weights, inputs.history, progress=progress,
                            teacher_api_key=key_)
        else:
            out = run_sft(store, req, iteration, inputs.adapter, progress=progress)
        record_outputs(store, iteration, phase, key)
    return {**out, "cache_key": key}
