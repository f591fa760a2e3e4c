"""Tasks of the eval gate: evaluating a model loads it (gpu tag, one resident model at a time);
registering, deciding and deploying do not (cpu tag). Thin shells over irsflow.release.gate_run.

Deploying retries transient serving failures only: ``gate_run.ServingError`` carries vLLM's HTTP
status, and ``retry_if_transient`` retries 408/409/425/429/5xx and connection errors (twice, after
about 5 s and 30 s); a 404 (e.g. a server without runtime LoRA updating) or a bad adapter fails at
once. A retry is safe: the registry only moves after vLLM served and verified the version."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from irsflow.models import resolve_model
from irsflow.release import gate_run as gr
from irsflow.store import JobStore
from tasks.credentials import require_teacher_key
from tasks.limits import CPU_TAG, GPU_TAG
from tasks.options import retry_if_transient


@task(name="register-challenger", tags=[CPU_TAG])
def register_task(settings: gr.EvalGateSettings, job_id: str) -> str:
    return gr.register_job(settings, JobStore(job_id))


@task(name="evaluate", tags=[GPU_TAG], task_run_name="evaluate-{who}")
def evaluate_task(settings: gr.EvalGateSettings, model_id: str, adapter: str | None, out: str, who: str) -> dict:
    key = require_teacher_key() if settings.suites.teacher is not None else None
    return gr.evaluate(settings, resolve_model(model_id), adapter, Path(out), teacher_api_key=key)


@task(name="gate", tags=[CPU_TAG])
def gate_task(
    settings: gr.EvalGateSettings, version: str, champion: dict, challenger: dict, n: int, champion_version: str | None
) -> dict:
    return gr.decide_and_record(settings, version, champion, challenger, n, champion_version)


# a vLLM server that is busy or restarting answers again within seconds: short delays, not the
# phases' minutes
@task(
    name="promote-deploy",
    tags=[CPU_TAG],
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
)
def deploy_task(settings: gr.EvalGateSettings, result: dict, previous_path: str | None) -> dict:
    return gr.promote_and_deploy(settings, result, previous_path)
