"""Preference data for DPO/KTO (issue: stages beyond IRS), from what the loop already produces:

- IRS candidates: per question the best vs the worst candidate by weighted total, when their
  totals differ by at least ``min_margin`` (``irs_pairs``);
- thumbs and corrections: the feedback ETL's ``pairs.jsonl`` (``load_pairs``);
- unpaired thumbs for KTO: ``sft.messages.jsonl`` (up) and ``annotation_queue.jsonl`` (down)
  (``kto_rows``).

Rows: ``{"prompt": [messages], "chosen": str, "rejected": str, "source", ...}`` and for KTO
``{"prompt": [messages], "completion": str, "label": bool}``. Errors name the file and line.
"""

from __future__ import annotations

from pathlib import Path

from irsflow.dataset import jsonl_objects
from irsflow.errors import InputError
from irsflow.paths import read_text
from irsflow.store import JobStore


def irs_pairs(store: JobStore, min_margin: float = 0.05, iterations: list[int] | None = None) -> list[dict]:
    out = []
    for it, s, row in store.samples_with_candidates(iterations):
        cands = [c for c in s["candidates"] if c["text"].strip()]
        if len(cands) < 2:
            continue
        best, worst = max(cands, key=lambda c: c["total"]), min(cands, key=lambda c: c["total"])
        margin = best["total"] - worst["total"]
        if margin >= min_margin and best["text"] != worst["text"]:
            out.append(
                {
                    "id": f"{it}:{s['id']}",
                    "prompt": row["prompt"],
                    "question": row.get("question"),
                    "chosen": best["text"],
                    "rejected": worst["text"],
                    "source": "irs",
                    "margin": round(margin, 6),
                }
            )
    return out


def _messages(value, where: str, field: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if (
        not isinstance(value, list)
        or not value
        or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    ):
        raise InputError(f"{where}: '{field}' must be a string or a non-empty list of {{role, content}} messages")
    return value


def load_pairs(path: str | Path) -> list[dict]:
    p = Path(path)
    out = []
    for where, _, row in jsonl_objects(read_text("pairs", p), str(p), InputError):
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object")
        prompt = _messages(row.get("prompt"), where, "prompt")
        for f in ("chosen", "rejected"):
            if not isinstance(row.get(f), str) or not row[f].strip():
                raise InputError(f"{where}: '{f}' must be a non-empty string")
        if row["chosen"] == row["rejected"]:
            raise InputError(f"{where}: chosen and rejected are the same text")
        out.append({**row, "prompt": prompt})
    return out


def kto_rows(up_path: str | Path, down_path: str | Path) -> list[dict]:
    """Unpaired thumbs: the last assistant turn of each dialogue, labelled desirable or not."""
    out = []
    for path, label in ((Path(up_path), True), (Path(down_path), False)):
        for where, _, row in jsonl_objects(read_text("kto", path), str(path), InputError):
            msgs = _messages(row.get("messages") if isinstance(row, dict) else None, where, "messages")
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise InputError(f"{where}: 'messages' must end with an assistant turn after a prompt")
            out.append({"prompt": msgs[:-1], "completion": msgs[-1]["content"], "label": label})
    return out
