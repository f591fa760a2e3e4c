"""The feedback ETL as a Prefect flow (a deployment on the cpu pool, and a subflow of the weekly cycle).

    Langfuse thumbs -> <data dir>/feedback/<run id>/ : SFT rows (messages, ShareGPT, Alpaca),
    preference pairs, annotation queue + Label Studio tasks, golden rows from corrections, manifest

Run it:  irsflow feedback etl [--label-studio-export export.json]
         prefect deployment run feedback-etl/feedback-etl
With ``settings.label_studio`` set ({"project_id": ID, "url": ...}), the project's JSON export is
pulled first (task pull-label-studio) and its new or edited corrections are taken; after the run,
its new thumbs-down tasks are pushed into the project (task push-label-studio; ``push: false`` to
skip), those already there (same trace or score) skipped and counted.
Keys: LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY, LABEL_STUDIO_API_KEY, or the Prefect Secret blocks
langfuse-public-key / langfuse-secret-key / label-studio-api-key. The run id is derived from the
flow run, so a retried run resumes the same run.
"""

from __future__ import annotations

import logging

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from irsflow.errors import InputError
from irsflow.feedback.etl import FeedbackSettings, feedback_dir
from tasks.feedback import extract_transform, pull_label_studio, push_label_studio
from tasks.logs import route_library_logs
from tasks.runs import stable_run_id

logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Langfuse request drowns the run log


def summary_markdown(m: dict) -> str:
    lines = [
        f"### Feedback ETL `{m['run_id']}`",
        "",
        (f"window {m['window'][0] or 'beginning'} .. {m['window'][1]}; " if m["window"][1] else "no Langfuse; ")
        + f"{m['counts'].get('records', 0)} feedback records, {m['counts'].get('corrections', 0)} corrections"
        + ("" if m.get("written", True) else " (nothing new: no files written)")
        + (f"; Langfuse not read: {m['langfuse_skipped']}" if m.get("langfuse_skipped") else ""),
        "",
        "| file | rows | sha256 |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {f['rows']} | `{f['sha256'][:12]}` |" for name, f in m["files"].items()]
    if m["skipped"]:
        lines += ["", "| skipped because | rows |", "|---|---|"] + [f"| {k} | {v} |" for k, v in m["skipped"].items()]
    return "\n".join(lines) + "\n"


@flow(name="feedback-etl", log_prints=False)
def feedback_etl(
    settings: FeedbackSettings = FeedbackSettings(),
    label_studio_export: str | None = None,
    run_id: str | None = None,
    skip_langfuse: str | None = None,
) -> dict:
    """Extract new thumbs from Langfuse, transform, write the run's files, then move the watermark.
    ``run_id`` names the output folder (the weekly cycle passes its own id, so its retries find it);
    ``skip_langfuse``: why Langfuse is not read this time (recorded in the manifest)."""
    route_library_logs()
    run_id = run_id or stable_run_id()
    if settings.label_studio is not None:
        if label_studio_export:
            raise InputError(
                "label_studio_export: given a file while settings.label_studio pulls project "
                f"{settings.label_studio.project_id}; use one or the other"
            )
        label_studio_export = pull_label_studio(settings.label_studio, run_id)
    manifest = extract_transform(settings, run_id, label_studio_export, skip_langfuse)
    pushed = None
    tasks_file = feedback_dir() / run_id / "label_studio_tasks.json"
    if (
        settings.label_studio is not None
        and settings.label_studio.push
        and manifest["files"]["label_studio_tasks.json"]["rows"]
        and tasks_file.exists()
    ):
        pushed = push_label_studio(settings.label_studio, str(tasks_file))
    create_markdown_artifact(
        markdown=summary_markdown(manifest),
        key="feedback-etl-summary",
        description="what the last feedback ETL run extracted and wrote",
    )
    return {k: manifest[k] for k in ("run_id", "window", "counts", "skipped", "written")} | {
        "files": {k: v["rows"] for k, v in manifest["files"].items()},
        "langfuse_skipped": manifest.get("langfuse_skipped"),
        "label_studio_push": pushed,
    }
