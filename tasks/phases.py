"""The four phase tasks of a round, each a thin shell over one row of the library's phase table
(``irsflow.jobs.rounds.run_phase``: ``irsflow.loop`` generates and scores, the job's stage object
trains, ``irsflow.evals.round_eval`` evaluates). Each takes ``(job_id, iteration)`` and reads
everything else from the job dir; ``_run`` gives the phase live progress, then records the content
hashes of what it wrote under its cache key (so a later cache hit can prove its files are still
there). GPU tasks carry the ``gpu`` tag (one model resident at a time across every job on the server).
"""

from __future__ import annotations

from irsflow.config import TrainRequest
from irsflow.jobs.job import load_job
from irsflow.jobs.resume import phase_key, record_outputs, stage_phases
from irsflow.jobs.rounds import run_phase
from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.stages import get_stage
from tasks.artifacts import progress_updater
from tasks.credentials import teacher_key
from tasks.limits import CPU_TAG, GPU_TAG
from tasks.logs import route_library_logs
from tasks.options import phase_task


def _run(job_id: str, iteration: int, phase: str) -> dict:
    route_library_logs()  # a task may run in another process than its flow
    store, req = load_job(job_id)
    with store.log_to_file():
        key = phase_key(store, req, iteration, phase)  # before running: the phase must not change its own inputs
        progress = progress_updater(store, iteration, phase, req.shared.n_iterations, stage_phases(req))
        out = run_phase(store, req, iteration, phase, progress=progress, teacher_api_key=_teacher_key(req, phase))
        record_outputs(store, iteration, phase, key)
    return {**out, "cache_key": key}


def _teacher_key(req: TrainRequest, phase: str) -> str | None:
    """Fetched inside the task, so it is never a parameter or a log line."""
    return teacher_key() if get_stage(req.stage).calls_teacher_in(phase, req) else None


@phase_task(GENERATING, GPU_TAG, "generate")
def generate(job_id: str, iteration: int) -> dict:
    """Sample the round's candidates (loads the model, releases it before returning)."""
    return _run(job_id, iteration, GENERATING)


@phase_task(SCORING, CPU_TAG, "score")
def score(job_id: str, iteration: int) -> dict:
    """Score the candidates with the round's weights, pick the best, update the weights; then whatever the
    stage writes from the scores (ONPOLICY's samples)."""
    return _run(job_id, iteration, SCORING)


@phase_task(TRAINING, GPU_TAG, "sft")
def train(job_id: str, iteration: int) -> dict:
    """Train the round with the job's stage, continuing the previous round's adapter (the flow names the
    task after the stage: ``sft`` for IRS, ``train-<stage>`` for the others)."""
    return _run(job_id, iteration, TRAINING)


@phase_task(EVALUATING, GPU_TAG, "evaluate-round")
def evaluate_round(job_id: str, iteration: int) -> dict:
    """Answer the held-out questions with the round's adapter (and the start model's, in round 1), and the
    round eval's questions where it is on: heldout_round_<n>.json, eval_round_<n>.json, CHANGELOG.md."""
    return _run(job_id, iteration, EVALUATING)
