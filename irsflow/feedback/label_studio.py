"""Human corrections through Label Studio: thumbs-down answers out as tasks, corrections back in.

    tasks = [ls_task(row) for row in thumbs_down_rows]      # import into a project using LABEL_CONFIG
    golden, pairs, skipped = read_export(path)               # a Label Studio JSON export

Each task shows the dialogue and a "correct this answer" text area pre-filled (as a prediction)
with the model's answer. Each completed, non-cancelled annotation becomes a golden SFT row (the
dialogue with the corrected answer) and, when the text changed, a preference pair
(corrected > original). With a Label Studio URL and key configured, ``push_tasks`` / ``pull_export``
use the optional ``label-studio-sdk`` (``pip install 'irsflow[labelstudio]'``).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from irsflow.errors import InputError

FROM_NAME, TO_NAME = "corrected", "dialogue"
LABEL_CONFIG = f"""<View>
  <Header value="Correct the assistant's last answer (leave it as is if it is right)"/>
  <Paragraphs name="{TO_NAME}" value="$messages" layout="dialogue" nameKey="role" textKey="content"/>
  <TextArea name="{FROM_NAME}" toName="{TO_NAME}" editable="true" maxSubmissions="1" rows="8"
            placeholder="The answer the assistant should have given"/>
</View>
"""


def ls_task(row: dict) -> dict:
    """A task for one thumbs-down row (``messages`` ending with the rejected answer)."""
    msgs = row["messages"]
    return {"data": {"messages": msgs, "answer": msgs[-1]["content"], "trace_id": row["trace_id"],
                     "score_id": row.get("score_id"), "comment": row.get("comment") or ""},
            "predictions": [{"model_version": "irsflow", "result": [{
                "from_name": FROM_NAME, "to_name": TO_NAME, "type": "textarea",
                "value": {"text": [msgs[-1]["content"]]}}]}]}


def _correction(annotation: dict) -> str | None:
    for r in annotation.get("result") or []:
        if r.get("from_name") == FROM_NAME and r.get("type") == "textarea":
            text = "\n".join(t for t in (r.get("value") or {}).get("text") or [] if isinstance(t, str)).strip()
            return text or None
    return None


def read_export(path: str | Path) -> tuple[list[dict], list[dict], Counter]:
    """Golden SFT rows and preference pairs from a Label Studio JSON export; per-task problems are
    counted in ``skipped`` (reason -> count). An unreadable file raises InputError naming it."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"label studio export {path}: not readable JSON ({err})") from None
    if not isinstance(tasks, list):
        raise InputError(f"label studio export {path}: expected a JSON list of tasks, got {type(tasks).__name__}")
    golden, pairs, skipped = [], [], Counter()
    for task in tasks:
        data = task.get("data") if isinstance(task, dict) else None
        msgs = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "assistant":
            skipped["task without a dialogue"] += 1
            continue
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:
            skipped["cancelled" if task.get("annotations") else "not annotated"] += 1
            continue
        latest = max(done, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0))
        text = _correction(latest)
        if text is None:
            skipped["empty correction"] += 1
            continue
        original = msgs[-1]["content"]
        meta = {"trace_id": data.get("trace_id"), "ls_task_id": task.get("id"), "ls_annotation_id": latest.get("id"),
                "annotator": latest.get("completed_by"), "source": "label-studio"}
        golden.append({"messages": msgs[:-1] + [{"role": "assistant", "content": text}], **meta})
        if text.strip() != original.strip():
            pairs.append({"prompt": msgs[:-1], "chosen": text, "rejected": original, **meta})
    return golden, pairs, skipped


def _client(url: str, api_key: str):
    try:
        from label_studio_sdk.client import LabelStudio
    except ImportError:
        raise InputError("label_studio.url is set but label-studio-sdk is not installed: "
                         "pip install 'irsflow[labelstudio]'") from None
    return LabelStudio(base_url=url, api_key=api_key)


def push_tasks(url: str, api_key: str, project_id: int, tasks: list[dict]) -> int:
    """Import tasks into a Label Studio project; returns how many were sent."""
    if tasks:
        _client(url, api_key).projects.import_tasks(id=project_id, request=tasks)
    return len(tasks)


def pull_export(url: str, api_key: str, project_id: int, out: Path) -> Path:
    """Download the project's JSON export to ``out`` (then read it with :func:`read_export`)."""
    client = _client(url, api_key)
    chunks = client.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=True)
    out.write_bytes(b"".join(chunks))
    return out
