"""The four phase tasks of a round, each a thin shell over the library: ``irsflow.loop`` generates
and scores, the job's stage object trains, ``irsflow.stages.evaluate`` runs the round eval. Each takes
``(job_id, iteration)`` and reads everything else from the job dir; ``_run`` gives it the round's
inputs and live progress, then records the content hashes of what it wrote under its cache key (so a
later cache hit can prove its files are still there). GPU tasks carry the ``gpu`` tag (one model
resident at a time across every job on the server).
"""
from __future__ import annotations

from typing import Callable

from irsflow.config import TrainRequest
from irsflow.jobs.job import open_job
from irsflow.jobs.resume import iteration_inputs, phase_key, record_outputs, stage_phases
from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.loop.phases import run_generate, run_score
from irsflow.stages import IterationInputs, get_stage
from irsflow.stages.evaluate import run_evaluation
from irsflow.store import JobStore, ProgressFn
from tasks.artifacts import progress_updater
from tasks.common import CPU_TAG, GPU_TAG, job_request, phase_task, route_library_logs, teacher_key

Body = Callable[[JobStore, TrainRequest, IterationInputs, ProgressFn], dict]


def _run(job_id: str, iteration: int, phase: str, body: Body) -> dict:
    route_library_logs()  # a task may run in another process than its flow
    store, req = open_job(job_id), job_request(job_id)
    with store.log_to_file():
        key = phase_key(store, req, iteration, phase)  # before running: the phase must not change its own inputs
        progress = progress_updater(store, iteration, phase, req.irs_config.n_iterations, stage_phases(req))
        out = body(store, req, iteration_inputs(store, req, iteration), progress)
        record_outputs(store, iteration, phase, key)
    return {**out, "cache_key": key}


def _teacher_key(req: TrainRequest, phase: str) -> str | None:
    """Fetched inside the task, so it is never a parameter or a log line."""
    return teacher_key() if get_stage(req.stage).calls_teacher_in(phase, req) else None


@phase_task(GENERATING, GPU_TAG, "generate")
def generate(job_id: str, iteration: int) -> dict:
    """Sample the round's candidates (loads the model, releases it before returning)."""
    return _run(job_id, iteration, GENERATING, lambda store, req, inputs, progress: run_generate(
        store, req, iteration, inputs.adapter, progress=progress))


@phase_task(SCORING, CPU_TAG, "score")
def score(job_id: str, iteration: int) -> dict:
    """Score the candidates with the round's weights, pick the best, update the weights; then whatever the
    stage writes from the scores (ONPOLICY's samples)."""
    def body(store, req, inputs, progress):
        out = run_score(store, req, iteration, inputs.weights, inputs.history, progress=progress,
                        teacher_api_key=_teacher_key(req, SCORING))
        return {**out, **get_stage(req.stage).after_scoring(store, req, iteration)}
    return _run(job_id, iteration, SCORING, body)


@phase_task(TRAINING, GPU_TAG, "sft")
def train(job_id: str, iteration: int) -> dict:
    """Train the round with the job's stage, continuing the previous round's adapter (the flow names the
    task after the stage: ``sft`` for IRS, ``train-<stage>`` for the others)."""
    return _run(job_id, iteration, TRAINING, lambda store, req, inputs, progress: get_stage(req.stage).run_training(
        store, req, iteration, inputs, progress=progress, teacher_api_key=_teacher_key(req, TRAINING)))


@phase_task(EVALUATING, GPU_TAG, "evaluate-round")
def evaluate_round(job_id: str, iteration: int) -> dict:
    """Answer the held-out questions with the round's adapter (and the start model's, in round 1), and the
    round eval's questions where it is on: heldout_round_<n>.json, eval_round_<n>.json, CHANGELOG.md."""
    return _run(job_id, iteration, EVALUATING, lambda store, req, inputs, progress: run_evaluation(
        store, req, iteration, inputs.adapter, inputs.weights, progress=progress))
