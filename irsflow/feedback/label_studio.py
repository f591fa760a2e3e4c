"""Human corrections through Label Studio: thumbs-down answers out as tasks, corrections back in.

    tasks = [ls_task(row) for row in thumbs_down_rows]      # import into a project using LABEL_CONFIG
    corrections, skipped = read_export(path)               # a Label Studio JSON export

Each task shows the dialogue and a "correct this answer" text area pre-filled (as a prediction) with
the model's answer. The latest (by ``updated_at``) completed, non-cancelled annotation of a task,
whoever made it, is the task's one correction: a golden SFT row (the dialogue with the corrected
answer) and a preference pair (corrected > original). A correction that is empty, whitespace only or
equal to the answer up to whitespace teaches nothing and is skipped with a counted reason. Only
Label Studio's ``JSON`` export carries the annotations with their ids and ``updated_at`` (what makes
each correction taken once, see ``corrections.py``); ``JSON_MIN`` and the other formats are refused
by name.
Pushing tasks and pulling the export over HTTP: ``label_studio_api.py``.
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
EXPORT_HINT = "export the project as JSON (exportType=JSON), the format that keeps annotation ids and updated_at"


def ls_task(row: dict) -> dict:
    """A task for one thumbs-down row (``messages`` ending with the rejected answer)."""
    msgs = row["messages"]
    return {
        "data": {
            "messages": msgs,
            "answer": msgs[-1]["content"],
            "trace_id": row["trace_id"],
            "score_id": row.get("score_id"),
            "comment": row.get("comment") or "",
        },
        "predictions": [
            {
                "model_version": "irsflow",
                "result": [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "textarea",
                        "value": {"text": [msgs[-1]["content"]]},
                    }
                ],
            }
        ],
    }


def _squash(text: str) -> str:
    return " ".join(text.split())


def _correction(annotation: dict) -> str | None:
    for r in annotation.get("result") or []:
        if r.get("from_name") == FROM_NAME and r.get("type") == "textarea":
            return "\n".join(t for t in (r.get("value") or {}).get("text") or [] if isinstance(t, str)).strip()
    return None


def check_format(tasks, where: str) -> list[dict]:
    """The export's tasks, or InputError naming the format when it is not Label Studio's JSON export.
    JSON_MIN (label-studio-sdk ``converter.py``, ``convert_to_json_min``) flattens each task into
    ``{"id", <data keys>, <control name>: value, "annotator", "annotation_id", "created_at",
    "updated_at", "lead_time"}``: no ``data``, no ``annotations``."""
    if isinstance(tasks, dict) and isinstance(tasks.get("tasks"), list):
        raise InputError(f"{where}: a Label Studio project backup, not a task export; {EXPORT_HINT}")
    if not isinstance(tasks, list):
        raise InputError(f"{where}: expected a JSON list of tasks, got {type(tasks).__name__}; {EXPORT_HINT}")
    rows = [t for t in tasks if isinstance(t, dict)]
    if rows and not any("data" in t or "annotations" in t or "completions" in t for t in rows):
        minimal = any("annotation_id" in t or "annotator" in t or FROM_NAME in t for t in rows)
        name = "JSON_MIN" if minimal else "a flat (JSON_MIN-like) list of rows"
        raise InputError(
            f"{where}: this is Label Studio's {name} export format (tasks flattened, without "
            f"'data' and 'annotations', so no annotation ids or edit times); {EXPORT_HINT}"
        )
    if rows and all("completions" in t and "annotations" not in t for t in rows):
        raise InputError(f"{where}: a pre-1.0 Label Studio export ('completions'); {EXPORT_HINT}")
    return tasks


def load_export(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as err:
        raise InputError(f"label studio export {path}: not readable ({err}); {EXPORT_HINT}") from None
    try:
        tasks = json.loads(text)
    except ValueError as err:
        head = text.lstrip()[:1]
        kind = "" if head in ("[", "{", "") else " (it looks like CSV, TSV or another non-JSON export format)"
        raise InputError(f"label studio export {path}: not readable JSON{kind} ({err}); {EXPORT_HINT}") from None
    return check_format(tasks, f"label studio export {path}")


def read_export(path: str | Path) -> tuple[list[dict], Counter]:
    """The corrections of a Label Studio JSON export, and per-task problems counted in ``skipped``
    (reason -> count). A file that is not a JSON export raises InputError naming it and its format.

    A correction: ``{"prompt", "original", "corrected", "ls_task_id", "ls_annotation_id",
    "ls_updated_at", "trace_id", "annotator"}``; turn it into rows with :func:`golden_row` / :func:`pair_row`."""
    corrections, skipped = [], Counter()
    for task in load_export(path):
        data = task.get("data") if isinstance(task, dict) else None
        msgs = data.get("messages") if isinstance(data, dict) else None
        if (
            not isinstance(msgs, list)
            or not msgs
            or not isinstance(msgs[-1], dict)
            or msgs[-1].get("role") != "assistant"
            or not isinstance(msgs[-1].get("content"), str)
        ):
            skipped["task without a dialogue"] += 1
            continue
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not done:
            skipped["cancelled" if task.get("annotations") else "not annotated"] += 1
            continue
        latest = max(done, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0))
        if latest.get("id") is None or task.get("id") is None:
            skipped["annotation without an id" if task.get("id") is not None else "task without an id"] += 1
            continue
        text, original = _correction(latest), msgs[-1]["content"]
        if not text:
            skipped["empty correction"] += 1  # blank, whitespace only, or no text area in the result
            continue
        if _squash(text) == _squash(original):
            skipped["correction same as the answer"] += 1
            continue
        corrections.append(
            {
                "prompt": msgs[:-1],
                "original": original,
                "corrected": text,
                "trace_id": data.get("trace_id"),
                "ls_task_id": task.get("id"),
                "ls_annotation_id": str(latest["id"]),
                "ls_updated_at": latest.get("updated_at") or latest.get("created_at"),
                "annotator": latest.get("completed_by"),
            }
        )
    return corrections, skipped


def _meta(c: dict) -> dict:
    return {
        "trace_id": c.get("trace_id"),
        "ls_task_id": c.get("ls_task_id"),
        "ls_annotation_id": c["ls_annotation_id"],
        "ls_updated_at": c.get("ls_updated_at"),
        "annotator": c.get("annotator"),
        "source": "label-studio",
    }


def golden_row(c: dict) -> dict:
    return {"messages": c["prompt"] + [{"role": "assistant", "content": c["corrected"]}], **_meta(c)}


def pair_row(c: dict) -> dict:
    return {
        "prompt": c["prompt"],
        "chosen": c["corrected"],
        "rejected": c["original"],
        **_meta(c),
        "chosen_trace_id": c.get("trace_id"),
        "rejected_trace_id": c.get("trace_id"),
    }
