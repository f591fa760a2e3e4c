"""The eval gate as a Prefect flow (deployment `eval-gate/eval-gate` on the gpu pool; a subflow of
the weekly cycle): one gate run per call, evaluate -> register -> gate -> deploy.

    irsflow eval-gate --job JOB_ID [--settings gate.json]      # a finished job's adapter
    prefect deployment run eval-gate/eval-gate -p job_id=JOB_ID
    irsflow rollback [--settings gate.json]                    # champion back, vLLM reloaded

1. the job's final adapter is checked, logged as an MLflow run and registered (alias challenger);
   without a job, the version aliased `challenger` is used;
2. champion (the `champion` alias, else the base model) and challenger are evaluated on the same
   suites (gpu-tagged tasks: one model resident at a time);
3. the gate decides (paired bootstrap on the primary metric, safety tolerances, diversity floors);
   the decision and its numbers go to MLflow (an eval run and the version's tags),
   <data dir>/evals/<model>/gate_run_<n>/gate_run_<n>.json and a Prefect markdown artifact;
4. on promotion: vLLM hot-loads the version's local copy under its serving name (verified), then
   `champion` moves and the model card becomes the version's description (and a file beside the
   cache; the run's artifacts are never rewritten). If vLLM cannot serve it, the previous adapter
   stays served, the registry stays as it was and the run fails with the serving error (429/5xx
   and connection errors are retried first). Every gate run appends to CHANGELOG.md.

Adapters are the registry's local copies (``Registry.adapter_path``: downloaded through MLflow
into the adapter cache), so an `mlflow server` need not share its disk with this machine.
"""

from __future__ import annotations

import logging
import time

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from irsflow.jobs.job import job_request, open_job
from irsflow.release import gate_run as gr
from irsflow.release.registry import CHAMPION, Registry
from tasks.eval import deploy_task, evaluate_task, gate_task, register_task
from tasks.limits import ensure_gpu_limit
from tasks.logs import route_library_logs

log = logging.getLogger("irsflow.evals")


@flow(name="eval-gate", log_prints=False)
def eval_gate(
    job_id: str | None = None, version: str | None = None, settings: gr.EvalGateSettings = gr.EvalGateSettings()
) -> dict:
    """Gate a finished job's adapter (``job_id``) or a registered ``version`` (default: the one
    aliased challenger) against the champion."""
    route_library_logs()
    ensure_gpu_limit()
    model_id = settings.model_id
    if job_id:
        store = open_job(job_id)
        model_id = model_id or job_request(store).model_id
        version = register_task(settings, store.job_id)
    reg = Registry(settings.tracking)
    version = gr.require_challenger(reg, version)
    if model_id is None:
        model_id = reg.version(version).tags.get("base_model")
    champ = reg.version(CHAMPION)
    champ_version = str(champ.version) if champ else None
    champ_path = reg.adapter_path(champ_version) if champ_version else None
    n = gr.next_gate_run(reg)
    out = gr.gate_run_dir(settings, n)
    log.info("gate run %d: version %s vs %s", n, version, f"version {champ_version}" if champ else "the base model")
    t0 = time.perf_counter()
    champion = evaluate_task(settings, model_id, champ_path, str(out / "champion"), "champion")
    challenger = evaluate_task(settings, model_id, reg.adapter_path(version), str(out / "challenger"), "challenger")
    gpu_seconds = time.perf_counter() - t0  # both evaluations hold a model the whole time
    result = gate_task(settings, version, champion, challenger, n, champ_version)
    create_markdown_artifact(
        markdown=gr.gate_markdown(result),
        key="eval-gate",
        description=f"gate decision, gate run {n}: version {version}",
    )
    log.info("gate run %d: %s", n, "; ".join(result["reasons"]))
    deployed = None
    try:
        if result["promote"]:
            deployed = deploy_task(settings, result, champ_path)
    except Exception as err:
        gr.changelog(settings, {**result, "promote": False, "reasons": result["reasons"] + [f"deploy failed: {err}"]})
        raise
    gr.changelog(settings, result)
    return {
        "gate_run": n,
        "version": version,
        "champion_before": champ_version,
        "promote": result["promote"],
        "reasons": result["reasons"],
        "deployed": deployed,
        "mlflow_run_id": result["mlflow_run_id"],
        "metrics": result["metrics"],
        "gpu_seconds": round(gpu_seconds, 3),
    }
