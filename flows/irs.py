"""Training jobs as Prefect flows: one parent run per job, one child flow run per iteration
(round). IRS, the default stage:

    for iteration in 1..n:
        generate (tag gpu)  ->  score (tag cpu)  ->  sft (tag gpu)
    checkpoints/final  <-  the last iteration's adapter

Every other stage (``request.stage``: ONPOLICY, DPO, KTO, GRPO, PPO, RM) runs through the same two
flows with its own phase list (``irsflow.resume.stage_phases``: GRPO has no generate/score, ONPOLICY
adds ``evaluate-round``) and its own training task (``train-<stage>``), same job dir and metrics.

The ``gpu`` tag has a concurrency limit of 1 (created here if missing), so across every job on
one Prefect server only one model is resident at a time; scoring runs beside it on the CPU.

Reruns resume: each phase's result is persisted under a key over its inputs, so a retried run
(``prefect flow-run retry``, the UI's Retry, ``irsflow rerun``) gets finished phases back Cached and
recomputes only what failed, or what ``from_phase``/``from_iteration`` force, or a phase whose
files went missing or changed.

Run it:  irsflow train --request configs/demo.json      irsflow rerun JOB_ID [--from-phase SCORING]
"""
from __future__ import annotations

import logging
import os
import socket
import traceback
from typing import Literal

from prefect import flow
from prefect.runtime import flow_run

from irsflow.charts import iteration_row
from irsflow.config import TrainRequest
from irsflow.job import open_job, open_or_create
from irsflow.phases import finalize, runtime_info
from irsflow.resume import (EVALUATING, GENERATING, SCORING, TRAINING, forced, outputs_valid, phase_key,
                            stage_phases)
from tasks.artifacts import publish_iterations, start_progress
from tasks.common import ensure_gpu_limit, job_request, require_teacher_key, track_job
from tasks.evaluate_round import evaluate_round
from tasks.generate import generate
from tasks.score import score
from tasks.sft import sft

Phase = Literal["GENERATING", "SCORING", "TRAINING", "EVALUATING"]
TASKS = {GENERATING: generate, SCORING: score, TRAINING: sft, EVALUATING: evaluate_round}
RESULT_KEY = {GENERATING: "generate", SCORING: "score", TRAINING: "sft", EVALUATING: "eval"}
log = logging.getLogger("irsflow.flow")


def phase_task_for(stage: str, phase: str):
    """The task of ``phase``; a stage's training task is named after it (``train-dpo-iter-1``)."""
    task = TASKS[phase]
    if phase == TRAINING and stage != "IRS":
        name = f"train-{stage.lower()}"
        task = task.with_options(name=name, task_run_name=f"{name}-iter-{{iteration}}")
    return task


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
    """One iteration (round) of an existing job: generate -> score -> train (-> evaluate) for IRS and
    the stages that sample, train (-> evaluate) for GRPO. Its inputs (adapter, weights, reward history)
    come from the job dir, so it also runs alone to redo one iteration."""
    store, req = open_job(job_id), job_request(job_id)
    out: dict = {"iteration": iteration, "stage": req.stage, "cached": []}
    with store.log_to_file():
        for phase in stage_phases(req):
            valid, why = outputs_valid(store, iteration, phase, phase_key(store, req, iteration, phase))
            must = forced(iteration, phase, from_phase, from_iteration)
            refresh = must or not valid
            if must or (not valid and why != "never finished"):
                log.info("iter %d %s: recomputing (%s)", iteration, phase, "forced" if must else why)
            task = phase_task_for(req.stage, phase)
            state = task.with_options(refresh_cache=refresh)(job_id, iteration, return_state=True)
            result = state.result()  # re-raises the task's failure
            if state.name == "Cached":
                out["cached"].append(phase)
                log.info("iter %d %s: cached result reused (%s)", iteration, phase, why)
            out[RESULT_KEY[phase]] = result
    return out


@flow(name="irs-train", flow_run_name=_job_run_name)
def irs_train(request: TrainRequest | None = None, job_id: str | None = None, from_phase: Phase | None = None,
              from_iteration: int = 1) -> dict:
    """A whole training job of any stage. ``job_id`` names a job dir to create or resume; without one a retried run
    finds the job it made by its flow run id. ``from_phase``/``from_iteration`` force that phase
    and everything after it."""
    ensure_gpu_limit()
    run_id = str(flow_run.get_id() or "")
    store, req = open_or_create(request, job_id, flow_run_id=run_id or None)
    job_id = store.job_id
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
                gpu_seconds += sum(out[k]["seconds"] for k in ("generate", "sft", "eval") if k in out)
                s = out.get("score") or out["sft"]  # GRPO scores inside its training
                log.info("iter %d: avg_reward=%s breakdown=%s weights=%s loss=%.4f%s", it, s.get("avg_reward"),
                         s.get("reward_breakdown"), s.get("next_weights"), out["sft"]["loss"],
                         f" (cached: {', '.join(out['cached'])})" if out["cached"] else "")
                rows.append(iteration_row(out))
                publish_iterations(store, rows)
                iterations.append({"iter": it, "avg_reward": s.get("avg_reward"),
                                   "reward_breakdown": s.get("reward_breakdown"), "weights_used": s.get("weights"),
                                   "weights": s.get("next_weights"), "loss": out["sft"]["loss"],
                                   "cached": out["cached"], **({"eval": out["eval"]["path"]} if "eval" in out else {})})
            final = finalize(store, out["sft"]["adapter"])
            if req.track:
                track_job(job_id)
        except BaseException as err:
            log.error("job %s failed: %s: %s", job_id, type(err).__name__, err)
            store.update_status(state="failed", error=f"{type(err).__name__}: {err}",
                                traceback=traceback.format_exc(limit=8))
            raise
        store.update_status(state="completed", current_phase="DONE", phase_progress=100.0)
    return {"job_id": job_id, "stage": req.stage, "job_dir": str(store.dir), "final_adapter": final,
            "iterations": iterations, "gpu_seconds": round(gpu_seconds, 3)}
