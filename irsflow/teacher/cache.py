"""Durable teacher-judgement cache (SQLite) and its JSONL export.

    cache = JudgementCache(Path("data/teacher/cache.sqlite"))
    key = judgement_key(model, template_version, prompt, answer, context)
    cache.get(key)  # -> dict | None
    cache.export_jsonl(Path("data/rl/teacher_judgements.jsonl"))

Stored: verdicts (``status`` ok) and replies that came back unusable (truncated, schema mismatch,
invalid JSON, copied example, content filter: see ``replies.py``), which the same judge returns again
when asked again, each with the ``max_tokens`` it was asked with. Never stored: failures that say
nothing about the answer (the endpoint was down, the reply was blank), so a rerun tries them again.
Each ``put`` commits at once, so a run killed halfway keeps every judgement it finished. No request
data (headers, key) is stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from irsflow.store import write_jsonl

_SCHEMA = """CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY, item_id TEXT, model TEXT, template_version TEXT,
    prompt TEXT, answer TEXT, context TEXT, reply TEXT,
    tokens_in INTEGER, tokens_out INTEGER, cost_usd REAL, created_at TEXT)"""
# added later: caches written before them read as status "ok" (they held verdicts only)
_ADDED = {"status": "TEXT NOT NULL DEFAULT 'ok'", "error": "TEXT", "max_tokens": "INTEGER"}
_COLUMNS = (
    "key",
    "item_id",
    "model",
    "template_version",
    "prompt",
    "answer",
    "context",
    "reply",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "created_at",
    *_ADDED,
)


def judgement_key(model: str, template_version: str, prompt: str, answer: str, context: str) -> str:
    """sha256 over a JSON list, so no field boundary is ambiguous ("ab"+"c" != "a"+"bc")."""
    blob = json.dumps([model, template_version, prompt, answer, context], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgementCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection used from the event-loop thread only; WAL lets a reader (export, a report)
        # look while a run writes.
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a killed process (the case that matters for reruns); only
        # power loss can drop the last few. FULL fsyncs on every put and stalls the event loop.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(judgements)")}
        for col, decl in _ADDED.items():
            if col not in have:
                self._db.execute(f"ALTER TABLE judgements ADD COLUMN {col} {decl}")
        self._db.commit()

    def get(self, key: str) -> dict | None:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM judgements WHERE key = ?", (key,)).fetchone()
        return self._row(row) if row else None

    def put(self, row: dict) -> None:
        row = {"status": "ok", "error": None, "max_tokens": None, **row}
        values = [json.dumps(row["reply"], ensure_ascii=False) if c == "reply" else row[c] for c in _COLUMNS]
        self._db.execute(
            f"INSERT OR REPLACE INTO judgements ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            values,
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]

    def export_jsonl(self, path: Path, keys: set[str] | None = None) -> int:
        """Write every cached judgement as ``teacher_judgements.jsonl`` (seed 001 section 3.1): one
        line per judgement with id, prompt, answer, teacher_score, safety_flag, comment, best_answer,
        its ``status`` and the model/template version that produced it; only ``keys`` if given. The
        id is the one the judgement was first made for; ``labelling.py`` writes its own items' ids.
        Returns the number of lines."""
        rows = [
            self._row(r)
            for r in self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM judgements ORDER BY created_at, key")
        ]
        if keys is not None:
            rows = [r for r in rows if r["key"] in keys]
        out = [judgement_line(r, r["item_id"]) for r in rows]
        write_jsonl(Path(path), out)
        return len(out)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _row(row: tuple) -> dict:
        d = dict(zip(_COLUMNS, row))
        d["reply"] = json.loads(d["reply"])
        return d


def judgement_line(row: dict, item_id: str) -> dict:
    """One ``teacher_judgements.jsonl`` line for a cached ``row``, under ``item_id``."""
    reply = {k: row["reply"].get(k) for k in ("teacher_score", "safety_flag", "comment", "best_answer")}
    if row["status"] != "ok":  # an unusable reply is recorded as what it was, never as a score
        reply = {
            "teacher_score": None,
            "safety_flag": None,
            "comment": None,
            "best_answer": None,
            "reply": row["reply"] or None,
        }
    return {
        "id": item_id,
        "status": row["status"],
        "prompt": row["prompt"],
        "answer": row["answer"],
        "context": row["context"],
        **reply,
        **({"error": row["error"]} if row["error"] else {}),
        "model": row["model"],
        "template_version": row["template_version"],
        "key": row["key"],
        "created_at": row["created_at"],
    }
