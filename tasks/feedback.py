"""CPU tasks of the feedback ETL: pull the Label Studio export, one ETL run (Langfuse ->
training data), push the run's new correction tasks back to Label Studio. Keys are fetched inside
the tasks so they never become a parameter, a log line or an artifact."""

from __future__ import annotations

from prefect import task

from irsflow.feedback.corrections import exports_dir
from irsflow.feedback.etl import FeedbackSettings, run_etl
from irsflow.feedback.label_studio_api import KEY_ENV, LabelStudioSettings, pull_export, push_tasks
from tasks.credentials import secret
from tasks.limits import CPU_TAG
from tasks.options import transient_retries

SECRET_BLOCKS = {"LANGFUSE_PUBLIC_KEY": "langfuse-public-key", "LANGFUSE_SECRET_KEY": "langfuse-secret-key"}
LABEL_STUDIO_KEY_BLOCK = "label-studio-api-key"


def langfuse_keys() -> tuple[str, str] | None:
    pk, sk = (secret(env, block) for env, block in SECRET_BLOCKS.items())
    return (pk, sk) if pk and sk else None  # None: LangfuseSettings says which one is missing


def label_studio_key() -> str | None:
    """$LABEL_STUDIO_API_KEY, else the Prefect Secret block ``label-studio-api-key``."""
    return secret(KEY_ENV, LABEL_STUDIO_KEY_BLOCK)


@task(name="pull-label-studio", tags=[CPU_TAG], **transient_retries(3))
def pull_label_studio(ls: LabelStudioSettings, run_id: str) -> str:
    """The project's JSON export (cumulative: the ETL takes each correction once) saved under
    ``<data dir>/label-studio/exports/<run id>.json``; a retried run pulls again into the same file."""
    out = exports_dir() / f"{run_id}.json"
    return pull_export(ls.server(), label_studio_key(), ls.project_id, out, timeout_s=ls.timeout_s)["path"]


@task(name="push-label-studio", tags=[CPU_TAG], **transient_retries(3))
def push_label_studio(ls: LabelStudioSettings, tasks_file: str) -> dict:
    """The ETL run's thumbs-down tasks into the project; tasks already there are skipped, so a
    retried or repeated push adds nothing."""
    import json
    from pathlib import Path

    tasks = json.loads(Path(tasks_file).read_text(encoding="utf-8"))
    return push_tasks(ls.server(), label_studio_key(), ls.project_id, tasks, timeout_s=ls.timeout_s)


@task(name="extract-transform", tags=[CPU_TAG], **transient_retries(3))
def extract_transform(
    settings: FeedbackSettings, run_id: str, label_studio_export: str | None = None, skip_langfuse: str | None = None
) -> dict:
    keys = None if skip_langfuse or not settings.langfuse_enabled else langfuse_keys()
    return run_etl(settings, run_id, keys=keys, label_studio_export=label_studio_export, skip_langfuse=skip_langfuse)
