"""IRS training as Prefect flows: one parent run per job, one child flow run per iteration.

    for iteration in 1..n:
        generate (tag gpu)  ->  score (tag cpu)  ->  sft (tag gpu)
    checkpoints/final  <-  the last iteration's adapter

The ``gpu`` tag has a concurrency limit of 1 (created here if missing), so across every job on
one Prefect server only one model is resident at a time; scoring runs beside it on the CPU.

Run it:  irsflow train --request configs/demo.json
"""
from __future__ import annotations

import logging
import traceback

from prefect import flow
from prefect.runtime import flow_run

from irsflow.config import TrainRequest
from irsflow.job import create_job
from irsflow.phases import finalize, runtime_info
from irsflow.store import JobStore
from tasks.common import ensure_gpu_limit
from tasks.generate import generate
from tasks.score import score
from tasks.sft import sft

# Library loggers ("irsflow.*") reach train.log and, with PREFECT_LOGGING_EXTRA_LOGGERS=irsflow,
# the flow-run logs in the UI; job-level lines go through the same logger so both tell one story.
log = logging.getLogger("irsflow.flow")


@flow(name="irs-iteration", flow_run_name="{job_id}-iter-{iteration}")
def irs_iteration(job_id: str, iteration: int, adapter: str | None, weights: dict[str, float],
                  history: list[dict]) -> dict:
    """One IRS iteration: generate -> score -> sft. Returns the phase summaries."""
    gen = generate(job_id, iteration, adapter)
    scored = score(job_id, iteration, weights, history, wait_for=[gen])
    trained = sft(job_id, iteration, adapter, wait_for=[scored])
    return {"iteration": iteration, "generate": gen, "score": scored, "sft": trained}


@flow(name="irs-train", flow_run_name="irs-{job_id}")
def irs_train(request: TrainRequest, job_id: str | None = None) -> dict:
    """A whole IRS job. ``job_id`` names an existing job dir (made by ``irsflow train``) or a new one."""
    ensure_gpu_limit()
    store = JobStore(job_id) if job_id and JobStore(job_id).exists() else create_job(request, job_id)
    job_id = store.job_id
    with store.log_to_file():
        store.update_status(state="running", flow_run_id=str(flow_run.get_id() or ""), error=None,
                            runtime=runtime_info())
        log.info("job %s: %d iterations, job dir %s", job_id, request.irs_config.n_iterations, store.dir)
        try:
            weights = dict(request.irs_config.dw_config.initial_weights)
            history: list[dict] = []
            adapter: str | None = None
            iterations = []
            for it in range(1, request.irs_config.n_iterations + 1):
                out = irs_iteration(job_id, it, adapter, weights, history)
                s = out["score"]
                log.info("iter %d: avg_reward=%.4f breakdown=%s weights=%s loss=%.4f", it, s["avg_reward"],
                            s["reward_breakdown"], s["next_weights"], out["sft"]["loss"])
                history.append(s["reward_breakdown"])
                weights = s["next_weights"]
                adapter = out["sft"]["adapter"]
                iterations.append({"iter": it, "avg_reward": s["avg_reward"], "reward_breakdown": s["reward_breakdown"],
                                   "weights_used": s["weights"], "weights": s["next_weights"],
                                   "loss": out["sft"]["loss"]})
            final = finalize(store, adapter)
        except BaseException as err:
            log.error("job %s failed: %s: %s", job_id, type(err).__name__, err)
            store.update_status(state="failed", error=f"{type(err).__name__}: {err}",
                                traceback=traceback.format_exc(limit=8))
            raise
        store.update_status(state="completed", current_phase="DONE", phase_progress=100.0)
    return {"job_id": job_id, "job_dir": str(store.dir), "final_adapter": final, "iterations": iterations}
