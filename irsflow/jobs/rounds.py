"""The job loop: a job's rounds one after another, each round's phases in its stage's order, then the
job's end. It is the one loop every way of running a job goes through: the Prefect flow
(``flows/train.py``) passes a round that runs the phase tasks (cached, retried, shown in the UI);
``run_job_local`` runs each phase in this process (benchmarks, tests, debugging a stage).

    for round in 1..n_iterations:
        generate -> score -> train -> evaluate     the phases the stage lists (``run_phase`` runs one)
        stop early?                                held-out reward, diversity, length (``irsflow.jobs.finish``)
    checkpoints/final  <-  the best round's adapter by held-out reward (``conclude``)

    store = create_job(request)
    job = run_job_local(store, job_request(store))
    job.final_round, job.rounds[-1].scores["avg_reward"], job.to_dict()
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from irsflow.config import TrainRequest
from irsflow.evals.heldout import heldout_history
from irsflow.evals.round_eval import run_evaluation
from irsflow.jobs.charts import iteration_row
from irsflow.jobs.finish import conclude, stop_decision
from irsflow.jobs.results import JobResult, RoundResult
from irsflow.jobs.resume import check_phase, iteration_inputs, stage_phases
from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.loop.phases import run_generate, run_score
from irsflow.stages import IterationInputs, get_stage
from irsflow.store import JobStore, ProgressFn

log = logging.getLogger("irsflow.jobs")

RunRound = Callable[[int], RoundResult]  # round number -> its result
OnRound = Callable[[RoundResult, list[dict]], None]  # a finished round, and the table rows of every round so far


# The phase table: each phase's library body, given the round's inputs as the job dir has them.


def _generate(
    store: JobStore,
    req: TrainRequest,
    iteration: int,
    inputs: IterationInputs,
    progress: ProgressFn | None,
    teacher_api_key: str | None,
) -> dict:
    return run_generate(store, req, iteration, inputs.adapter, progress=progress)


def _score(
    store: JobStore,
    req: TrainRequest,
    iteration: int,
    inputs: IterationInputs,
    progress: ProgressFn | None,
    teacher_api_key: str | None,
) -> dict:
    out = run_score(
        store, req, iteration, inputs.weights, inputs.history, progress=progress, teacher_api_key=teacher_api_key
    )
    return {**out, **get_stage(req.stage).after_scoring(store, req, iteration)}  # e.g. ONPOLICY's samples


def _train(
    store: JobStore,
    req: TrainRequest,
    iteration: int,
    inputs: IterationInputs,
    progress: ProgressFn | None,
    teacher_api_key: str | None,
) -> dict:
    return get_stage(req.stage).run_training(
        store, req, iteration, inputs, progress=progress, teacher_api_key=teacher_api_key
    )


def _evaluate(
    store: JobStore,
    req: TrainRequest,
    iteration: int,
    inputs: IterationInputs,
    progress: ProgressFn | None,
    teacher_api_key: str | None,
) -> dict:
    return run_evaluation(store, req, iteration, inputs.adapter, inputs.weights, progress=progress)


PHASE_BODIES = {GENERATING: _generate, SCORING: _score, TRAINING: _train, EVALUATING: _evaluate}


def run_phase(
    store: JobStore,
    req: TrainRequest,
    iteration: int,
    phase: str,
    progress: ProgressFn | None = None,
    teacher_api_key: str | None = None,
) -> dict:
    """Run one phase of round ``iteration`` from the round's inputs in the job dir; returns its result.
    ``teacher_api_key`` reaches the phases that may score with the teacher (SCORING, a self-scoring
    stage's TRAINING)."""
    body = PHASE_BODIES[check_phase(phase)]
    return body(store, req, iteration, iteration_inputs(store, req, iteration), progress, teacher_api_key)


def run_job(
    store: JobStore,
    req: TrainRequest,
    run_round: RunRound,
    *,
    from_phase: str | None = None,
    from_iteration: int = 1,
    on_round: OnRound | None = None,
) -> JobResult:
    """Rounds 1..n of the job through ``run_round``, stopping early where ``req.early_stop`` says so,
    then the final adapter. A rerun forcing ``from_phase`` of a later round ``from_iteration`` does
    not stop before that round (the rerun asked for it)."""
    rounds: list[RoundResult] = []
    rows: list[dict] = []
    why: str | None = None
    for it in range(1, req.shared.n_iterations + 1):
        result = run_round(it)
        rounds.append(result)
        rows.append(iteration_row(result))
        if on_round is not None:
            on_round(result, rows)
        stop, why = stop_decision(heldout_history(store, it), req.early_stop)
        if stop and from_phase is not None and it < from_iteration:
            log.info("iter %d: early stop (%s) overridden: the rerun forces iteration %d", it, why, from_iteration)
            stop, why = False, None
        if stop:
            break
    final, final_round = conclude(store, req, len(rounds), why)
    return JobResult(
        job_id=store.job_id,
        stage=req.stage,
        job_dir=store.dir,
        final_adapter=final,
        final_round=final_round,
        stopped_early=why,
        rounds=rounds,
    )


# In this process: every phase in turn, no caching, retries or UI.


def run_round_local(
    store: JobStore, req: TrainRequest, iteration: int, teacher_api_key: str | None = None
) -> RoundResult:
    """Every phase of one round, in the stage's order."""
    phases = {p: run_phase(store, req, iteration, p, teacher_api_key=teacher_api_key) for p in stage_phases(req)}
    return RoundResult(iteration=iteration, stage=req.stage, phases=phases)


def run_job_local(
    store: JobStore, req: TrainRequest, *, teacher_api_key: str | None = None, on_round: OnRound | None = None
) -> JobResult:
    """A whole job in this process (as the flow runs it, early stop and final choice included)."""
    return run_job(store, req, lambda it: run_round_local(store, req, it, teacher_api_key), on_round=on_round)
