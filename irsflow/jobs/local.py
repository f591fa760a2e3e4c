"""A job's rounds in this process, without Prefect: the same library functions the flow's tasks wrap,
in the order the stage lists its phases, with no caching, retries or UI. For benchmarks, tests and
debugging a stage; production jobs run through ``flows/irs.py``.

    store = create_job(request)
    for it in range(1, n + 1):
        run_round(store, job_request(store), it)
"""
from __future__ import annotations

from irsflow.config import TrainRequest
from irsflow.jobs.resume import iteration_inputs
from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.loop.phases import run_generate, run_score
from irsflow.stages import get_stage
from irsflow.stages.evaluate import run_evaluation
from irsflow.store import JobStore


def run_round(store: JobStore, req: TrainRequest, iteration: int, teacher_api_key: str | None = None) -> dict:
    """Every phase of one round; returns each phase's result by phase name."""
    stage, out = get_stage(req.stage), {}
    for phase in stage.phases(req):
        inputs = iteration_inputs(store, req, iteration)
        if phase == GENERATING:
            out[phase] = run_generate(store, req, iteration, inputs.adapter)
        elif phase == SCORING:
            out[phase] = {**run_score(store, req, iteration, inputs.weights, inputs.history,
                                      teacher_api_key=teacher_api_key), **stage.after_scoring(store, req, iteration)}
        elif phase == TRAINING:
            out[phase] = stage.run_training(store, req, iteration, inputs, teacher_api_key=teacher_api_key)
        elif phase == EVALUATING:
            out[phase] = run_evaluation(store, req, iteration, inputs.adapter, inputs.weights)
    return out
