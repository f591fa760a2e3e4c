"""CPU task: one feedback ETL run (Langfuse -> training data), keys fetched inside the task so they
never become a parameter, a log line or an artifact."""
from __future__ import annotations

from prefect import task

from irsflow.feedback.etl import FeedbackSettings, run_etl
from tasks.common import CPU_TAG, secret, transient_retries

SECRET_BLOCKS = {"LANGFUSE_PUBLIC_KEY": "langfuse-public-key", "LANGFUSE_SECRET_KEY": "langfuse-secret-key"}


def langfuse_keys() -> tuple[str, str] | None:
    pk, sk = (secret(env, block) for env, block in SECRET_BLOCKS.items())
    return (pk, sk) if pk and sk else None  # None: LangfuseSettings says which one is missing


@task(name="extract-transform", tags=[CPU_TAG], **transient_retries(3))
def extract_transform(settings: FeedbackSettings, run_id: str, label_studio_export: str | None = None) -> dict:
    return run_etl(settings, run_id, keys=langfuse_keys(), label_studio_export=label_studio_export)
