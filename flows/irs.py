"""Training jobs as Prefect flows: one parent run per job (``irs_train``), one child flow run per
round (``irs_iteration``), for every stage (``request.stage``; ``irsflow.stages``):

    for round in 1..n_iterations:
        generate (gpu)  ->  score (cpu)  ->  train (gpu)  ->  evaluate-round (gpu)
        (each only where the stage's phase list has it: GRPO trains only, ONPOLICY adds the eval)
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
from irsflow.jobs.charts import iteration_row
from irsflow.jobs.job import open_job, open_or_create
from irsflow.jobs.resume import check_from_iteration, forced, outputs_valid, phase_key, stage_phases
from irsflow.loop import EVALUATING, GENERATING, SCORING, TRAINING, Phase
from irsflow.loop.phases import runtime_info
from irsflow.stages import get_stage
from irsflow.stages.heldout import conclude, heldout_history, stop_decision
from tasks.artifacts import publish_iterations, start_progress
from tasks.common import ensure_gpu_limit, job_request, require_teacher_key, route_library_logs, track_job
from tasks.phases import evaluate_round, generate, score, train

log = logging.getLogger("irsflow.flow")


def _iteration_run_name() -> str:
    p = flow_run.parameters
    return f"{p['job_id']}-iter-{p['iteration']}"


def _job_run_name() -> str:
    p = flow_run.parameters
    req = p.get("request")
    stage = (req.get("stage") if isinstance(req, dict) else getattr(req, "stage", None)) or "irs"
    return f"{str(stage).lower()}-{p.get('job_id') or 'new'}"


@flow(name="irs-iteration", flow_run_name=_iteration_run_name)
def irs_iteration(job_id: str, iteration: int, from_phase: Phase | None = None, from_iteration: int = 1) -> dict:
    """One round of an existing job, its phases in order as the job's stage lists them. Its inputs
    (adapter, weights, reward history) come from the job dir, so it also runs alone to redo one round."""
    route_library_logs()
    store, req = open_job(job_id), job_request(job_id)
    stage = get_stage(req.stage)
    phases = stage.phases(req)
    out: dict = {"iteration": iteration, "stage": req.stage, "cached": []}
    with store.log_to_file():
        def run(task, phase: str) -> dict:
            return _run_phase(task, phase, store, req, iteration, from_phase, from_iteration, out["cached"])

        if GENERATING in phases:
            out["generate"] = run(generate, GENERATING)
        if SCORING in phases:
            out["score"] = run(score, SCORING)
        out["train"] = run(train.with_options(name=stage.task_name,
                                              task_run_name=f"{stage.task_name}-iter-{{iteration}}"), TRAINING)
        if EVALUATING in phases:
            out["eval"] = run(evaluate_round, EVALUATING)
    return out


def _run_phase(task, phase: str, store, req: TrainRequest, iteration: int, from_phase: str | None,
               from_iteration: int, cached: list[str]) -> dict:
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


@flow(name="irs-train", flow_run_name=_job_run_name)
def irs_train(request: TrainRequest | None = None, job_id: str | None = None, from_phase: Phase | None = None,
              from_iteration: int = 1) -> dict:
    """A whole training job of any stage. ``job_id`` names a job dir to create or resume; without one a retried run
    finds the job it made by its flow run id. ``from_phase``/``from_iteration`` force that phase
    and everything after it."""
    route_library_logs()
    ensure_gpu_limit()
    run_id = str(flow_run.get_id() or "")
    store, req = open_or_create(request, job_id, flow_run_id=run_id or None)
    job_id = store.job_id
    check_from_iteration(job_id, req.irs_config.n_iterations, from_iteration)  # before the job is touched
    with store.log_to_file():
        store.update_status(state="running", flow_run_id=run_id, error=None, traceback=None,
                            runtime=runtime_info(), pid=os.getpid(), host=socket.gethostname())
        log.info("job %s: %d iterations of stage %s (%s), job dir %s%s", job_id, req.irs_config.n_iterations,
                 req.stage, " -> ".join(stage_phases(req)), store.dir,
                 f", forcing from iteration {from_iteration} {from_phase}" if from_phase else "")
        start_progress(store)
        rows, iterations, gpu_seconds = [], [], 0.0
        try:
            if req.uses_teacher():
                require_teacher_key()  # before generation, not after it
            for it in range(1, req.irs_config.n_iterations + 1):
                out = irs_iteration(job_id, it, from_phase, from_iteration)
                gpu_seconds += sum(out[k]["seconds"] for k in ("generate", "train", "eval") if k in out)
                s = out.get("score") or out["train"]  # GRPO scores inside its training
                log.info("iter %d: avg_reward=%s breakdown=%s weights=%s loss=%.4f%s", it, s.get("avg_reward"),
                         s.get("reward_breakdown"), s.get("next_weights"), out["train"]["loss"],
                         f" (cached: {', '.join(out['cached'])})" if out["cached"] else "")
                rows.append(iteration_row(out))
                publish_iterations(store, rows)
                iterations.append({"iter": it, "avg_reward": s.get("avg_reward"),
                                   "reward_breakdown": s.get("reward_breakdown"), "weights_used": s.get("weights"),
                                   "weights": s.get("next_weights"), "loss": out["train"]["loss"],
                                   "cached": out["cached"], **({"eval": out["eval"]["path"]} if "eval" in out else {}),
                                   **({"heldout": out["eval"]["heldout"]} if "heldout" in out.get("eval", {}) else {})})
                stop, why = stop_decision(heldout_history(store, it), req.early_stop)
                if stop and from_phase is not None and it < from_iteration:  # the rerun forces a later round
                    log.info("iter %d: early stop (%s) overridden: the rerun forces iteration %d", it, why,
                             from_iteration)
                    stop = False
                if stop:
                    break
            final, final_round = conclude(store, req, it, why if stop else None)
            if req.track:
                track_job(job_id)
        except BaseException as err:
            log.error("job %s failed: %s: %s", job_id, type(err).__name__, err)
            store.update_status(state="failed", error=f"{type(err).__name__}: {err}",
                                traceback=traceback.format_exc(limit=8))
            raise
        store.update_status(state="completed", current_phase="DONE", phase_progress=100.0)
    return {"job_id": job_id, "stage": req.stage, "job_dir": str(store.dir), "final_adapter": final,
            "final_round": final_round, "stopped_early": why if stop else None, "iterations": iterations,
            "gpu_seconds": round(gpu_seconds, 3)}
