"""Training jobs as Prefect flows, for every stage (``request.stage``; ``irsflow.stages``): one parent
run per job (flow ``train``, ``train_job``), one child flow run per round (flow ``train-round``,
``train_round``). The job loop is the library's (``irsflow.jobs.rounds.run_job``, the same one
``run_job_local`` runs without Prefect); this flow gives it a round that runs the phase tasks:

    for round in 1..n_iterations:                                   train_round, a child flow run
        generate (gpu)  ->  score (cpu)  ->  train (gpu)  ->  evaluate-round (gpu)
        (each only where the stage's phase list has it: GRPO trains only, ONPOLICY adds the eval)
        the round's table row, trend chart and log line             _report_round
    after each round: stop early where ``early_stop`` says so (held-out reward, diversity, length)
    checkpoints/final  <-  the best round's adapter by held-out reward (the last round's without a split)

The ``gpu`` tag has a concurrency limit of 1 (created here if missing), so across every job on
one Prefect server only one model is resident at a time; scoring runs beside it on the CPU.

Reruns resume: each phase's result is persisted under a key over its inputs, so a retried run
(``prefect flow-run retry``, the UI's Retry, ``irsflow rerun``) gets finished phases back Cached and
recomputes only what failed, or what ``from_phase``/``from_iteration`` force, or a phase whose
files went missing or changed (``_run_phase`` is the one place that decides).

Run it:  irsflow train --request configs/demo.json      irsflow rerun JOB_ID [--from-phase SCORING]
"""

from __future__ import annotations

import logging
import os
import socket
import traceback

from prefect import flow
from prefect.runtime import flow_run

from irsflow.config import TrainRequest
from irsflow.jobs.job import load_job, open_or_create
from irsflow.jobs.results import RoundResult
from irsflow.jobs.resume import check_from_iteration, forced, outputs_valid, phase_key, stage_phases
from irsflow.jobs.rounds import run_job
from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING, Phase
from irsflow.loop.phases import runtime_info
from irsflow.stages import get_stage
from irsflow.store import JobStore
from tasks.artifacts import publish_iterations, start_progress
from tasks.credentials import require_teacher_key
from tasks.limits import ensure_gpu_limit
from tasks.logs import route_library_logs
from tasks.phases import evaluate_round, generate, score, train
from tasks.tracking import track_job

log = logging.getLogger("irsflow.flow")


def _round_run_name() -> str:
    p = flow_run.parameters
    return f"{p['job_id']}-iter-{p['iteration']}"


def _job_run_name() -> str:
    p = flow_run.parameters
    req = p.get("request")
    stage = (req.get("stage") if isinstance(req, dict) else getattr(req, "stage", None)) or "irs"
    return f"{str(stage).lower()}-{p.get('job_id') or 'new'}"


@flow(name="train-round", flow_run_name=_round_run_name)
def train_round(job_id: str, iteration: int, from_phase: Phase | None = None, from_iteration: int = 1) -> dict:
    """One round of an existing job, its phases in order as the job's stage lists them. Its inputs
    (adapter, weights, reward history) come from the job dir, so it also runs alone to redo one round.
    Returns ``RoundResult.to_dict()``: each phase's result under generate/score/train/eval."""
    route_library_logs()
    store, req = load_job(job_id)
    stage = get_stage(req.stage)
    tasks = {
        GENERATING: generate,
        SCORING: score,
        EVALUATING: evaluate_round,
        TRAINING: train.with_options(name=stage.task_name, task_run_name=f"{stage.task_name}-iter-{{iteration}}"),
    }
    phases: dict[str, dict] = {}
    cached: list[str] = []
    with store.log_to_file():
        for phase in stage.phases(req):
            phases[phase] = _run_phase(tasks[phase], phase, store, req, iteration, from_phase, from_iteration, cached)
    return RoundResult(iteration=iteration, stage=req.stage, phases=phases, cached=tuple(cached)).to_dict()


def _run_phase(
    task,
    phase: str,
    store,
    req: TrainRequest,
    iteration: int,
    from_phase: str | None,
    from_iteration: int,
    cached: list[str],
) -> dict:
    """Run one phase task, reusing its cached result unless forced or its files are gone or changed."""
    valid, why = outputs_valid(store, iteration, phase, phase_key(store, req, iteration, phase))
    must = forced(iteration, phase, from_phase, from_iteration)
    if must or (not valid and why != "never finished"):
        log.info("iter %d %s: recomputing (%s)", iteration, phase, "forced" if must else why)
    state = task.with_options(refresh_cache=must or not valid)(store.job_id, iteration, return_state=True)
    result = state.result()  # re-raises the task's failure
    if state.name == "Cached":
        cached.append(phase)
        log.info("iter %d %s: cached result reused (%s)", iteration, phase, why)
    return result


def _report_round(store: JobStore):
    """After each round: its log line, and the UI's table and trend chart over every round so far."""

    def report(r: RoundResult, rows: list[dict]) -> None:
        s = r.scores
        log.info(
            "iter %d: avg_reward=%s breakdown=%s weights=%s loss=%.4f%s",
            r.iteration,
            s.get("avg_reward"),
            s.get("reward_breakdown"),
            s.get("next_weights"),
            r.loss,
            f" (cached: {', '.join(r.cached)})" if r.cached else "",
        )
        publish_iterations(store, rows)

    return report


@flow(name="train", flow_run_name=_job_run_name)
def train_job(
    request: TrainRequest | None = None,
    job_id: str | None = None,
    from_phase: Phase | None = None,
    from_iteration: int = 1,
) -> dict:
    """A whole training job of any stage. ``job_id`` names a job dir to create or resume; without one a retried run
    finds the job it made by its flow run id. ``from_phase``/``from_iteration`` force that phase
    and everything after it. Returns ``JobResult.to_dict()``."""
    route_library_logs()
    ensure_gpu_limit()
    run_id = str(flow_run.get_id() or "")
    store, req = open_or_create(request, job_id, flow_run_id=run_id or None)
    job_id = store.job_id
    check_from_iteration(job_id, req.shared.n_iterations, from_iteration)  # before the job is touched

    def run_round(iteration: int) -> RoundResult:
        return RoundResult.from_dict(train_round(job_id, iteration, from_phase, from_iteration))

    with store.log_to_file():
        # total_rounds again: a job created before the status fields were renamed has total_iterations only
        store.update_status(
            state="running",
            flow_run_id=run_id,
            error=None,
            traceback=None,
            total_rounds=req.shared.n_iterations,
            runtime=runtime_info(),
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        log.info(
            "job %s: %d rounds of stage %s (%s), job dir %s%s",
            job_id,
            req.shared.n_iterations,
            req.stage,
            " -> ".join(stage_phases(req)),
            store.dir,
            f", forcing from iteration {from_iteration} {from_phase}" if from_phase else "",
        )
        start_progress(store)
        try:
            if req.uses_teacher():
                require_teacher_key()  # before generation, not after it
            job = run_job(
                store,
                req,
                run_round,
                from_phase=from_phase,
                from_iteration=from_iteration,
                on_round=_report_round(store),
            )
            if req.track:
                track_job(job_id)
        except BaseException as err:
            log.error("job %s failed: %s: %s", job_id, type(err).__name__, err)
            store.update_status(
                state="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=8)
            )
            raise
        store.update_status(state="completed", current_phase="DONE", phase_progress=100.0)
    return job.to_dict()
