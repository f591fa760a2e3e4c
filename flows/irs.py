"""IRS training as Prefect flows: one parent run per job, one child flow run per iteration.

    for iteration in 1..n:
        generate (tag gpu)  ->  score (tag cpu)  ->  sft (tag gpu)
    checkpoints/final  <-  the last iteration's adapter

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
from irsflow.resume import GENERATING, PHASES, SCORING, TRAINING, forced, outputs_valid, phase_key
from tasks.artifacts import publish_iterations, start_progress
from tasks.common import ensure_gpu_limit, job_request, require_teacher_key, track_job
from tasks.generate import generate
from tasks.score import score
from tasks.sft import sft

Phase = Literal["GENERATING", "SCORING", "TRAINING"]
TASKS = {GENERATING: generate, SCORING: score, TRAINING: sft}
log = logging.getLogger("irsflow.flow")


def _iteration_run_name() -> str:
    p = flow_run.parameters
    return f"{p['job_id']}-iter-{p['iteration']}"


def _job_run_name() -> str:
    return f"irs-{flow_run.parameters.get('job_id') or 'new'}"


@flow(name="irs-iteration", flow_run_name=_iteration_run_name)
def irs_iteration(job_id: str, iteration: int, from_phase: Phase | None = None, from_iteration: int = 1) -> dict:
    """One IRS iteration of an existing job: generate -> score -> sft. Its inputs (adapter, weights,
    reward history) come from the job dir, so it also runs alone to redo one iteration."""
    store, req = open_job(job_id), job_request(job_id)
    out: dict = {"iteration": iteration, "cached": []}
    with store.log_to_file():
        for phase in PHASES:
            valid, why = outputs_valid(store, iteration, phase, phase_key(store, req, iteration, phase))
            must = forced(iteration, phase, from_phase, from_iteration)
            refresh = must or not valid
            if must or (not valid and why != "never finished"):
                log.info("iter %d %s: recomputing (%s)", iteration, phase, "forced" if must else why)
            state = TASKS[phase].with_options(refresh_cache=refresh)(job_id, iteration, return_state=True)
            result = state.result()  # re-raises the task's failure
            if state.name == "Cached":
                out["cached"].append(phase)
                log.info("iter %d %s: cached result reused (%s)", iteration, phase, why)
            out[{GENERATING: "generate", SCORING: "score", TRAINING: "sft"}[phase]] = result
    return out


@flow(name="irs-train", flow_run_name=_job_run_name)
def irs_train(request: TrainRequest | None = None, job_id: str | None = None, from_phase: Phase | None = None,
              from_iteration: int = 1) -> dict:
    """A whole IRS job. ``job_id`` names a job dir to create or resume; without one a retried run
    finds the job it made by its flow run id. ``from_phase``/``from_iteration`` force that phase
    and everything after it."""
    ensure_gpu_limit()
    run_id = str(flow_run.get_id() or "")
    store, req = open_or_create(request, job_id, flow_run_id=run_id or None)
    job_id = store.job_id
    with store.log_to_file():
        store.update_status(state="running", flow_run_id=run_id, error=None, traceback=None,
                            runtime=runtime_info(), pid=os.getpid(), host=socket.gethostname())
        log.info("job %s: %d iterations, job dir %s%s", job_id, req.irs_config.n_iterations, store.dir,
                 f", forcing from iteration {from_iteration} {from_phase}" if from_phase else "")
        start_progress(store)
        rows, iterations = [], []
        try:
            if req.uses_teacher():
                require_teacher_key()  # before generation, not after it
            for it in range(1, req.irs_config.n_iterations + 1):
                out = irs_iteration(job_id, it, from_phase, from_iteration)
                s = out["score"]
                log.info("iter %d: avg_reward=%.4f breakdown=%s weights=%s loss=%.4f%s", it, s["avg_reward"],
                         s["reward_breakdown"], s["next_weights"], out["sft"]["loss"],
                         f" (cached: {', '.join(out['cached'])})" if out["cached"] else "")
                rows.append(iteration_row(out))
                publish_iterations(store, rows)
                iterations.append({"iter": it, "avg_reward": s["avg_reward"], "reward_breakdown": s["reward_breakdown"],
                                   "weights_used": s["weights"], "weights": s["next_weights"],
                                   "loss": out["sft"]["loss"], "cached": out["cached"]})
            final = finalize(store, out["sft"]["adapter"])
            if req.track:
                track_job(job_id)
        except BaseException as err:
            log.error("job %s failed: %s: %s", job_id, type(err).__name__, err)
            store.update_status(state="failed", error=f"{type(err).__name__}: {err}",
                                traceback=traceback.format_exc(limit=8))
            raise
        store.update_status(state="completed", current_phase="DONE", phase_progress=100.0)
    return {"job_id": job_id, "job_dir": str(store.dir), "final_adapter": final, "iterations": iterations}
