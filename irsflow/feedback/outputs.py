"""The files one ETL run writes, streamed row by row into the run's temporary folder.

    <data dir>/feedback/<run id>/
        sft.messages.jsonl  sft.sharegpt.jsonl  sft.alpaca.jsonl    thumbs-up dialogues, 3 formats
        annotation_queue.jsonl  label_studio_tasks.json             thumbs-down answers for humans
        pairs.jsonl                                                 prompt / chosen / rejected
        golden.messages.jsonl                                       human corrections (Label Studio)
        manifest.json                                               counts, skip reasons, sha256 per file

Every row carries its provenance (``trace_id``; pairs carry both sides' ids). Rows are written
as they come, so memory does not grow with the number of traces; a preference pair needs the
other half of its prompt, found through an on-disk index (SQLite, bounded cache) of prompt key ->
file offset, not kept in memory.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO

from irsflow.feedback.label_studio import ls_task
from irsflow.feedback.transform import Skip, TransformSettings, alpaca_row, prompt_key, sharegpt_row, to_messages

FILES = (
    "sft.messages.jsonl",
    "sft.sharegpt.jsonl",
    "sft.alpaca.jsonl",
    "annotation_queue.jsonl",
    "label_studio_tasks.json",
    "pairs.jsonl",
    "golden.messages.jsonl",
)


class JsonlSink:
    """An append-only JSONL file that hashes what it writes and can read a row back by offset."""

    def __init__(self, path: Path):
        self.path = path
        self.f: IO[bytes] = path.open("w+b")
        self.sha = hashlib.sha256()
        self.rows = 0

    def write(self, row: dict) -> int:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        offset = self.f.seek(0, 2)
        self.f.write(data)
        self.sha.update(data)
        self.rows += 1
        return offset

    def read_at(self, offset: int) -> dict:
        self.f.flush()
        pos = self.f.tell()
        self.f.seek(offset)
        row = json.loads(self.f.readline())
        self.f.seek(pos)
        return row

    def close(self) -> dict:
        self.f.flush()
        self.f.close()
        return {"rows": self.rows, "sha256": self.sha.hexdigest()}


class JsonArraySink(JsonlSink):
    """A JSON list written element by element (Label Studio imports a list of tasks)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._raw(b"[\n")

    def _raw(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)

    def write(self, row: dict) -> int:
        self._raw((b",\n" if self.rows else b"") + json.dumps(row, ensure_ascii=False).encode("utf-8"))
        self.rows += 1
        return -1

    def close(self) -> dict:
        self._raw(b"\n]\n")
        return super().close()


class PromptIndex:
    """prompt key -> offsets of its first up row and first down row, on disk (memory stays flat)."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="irsflow-pairs-")
        self.db = sqlite3.connect(f"{self._dir.name}/index.sqlite")
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-2048;"
            "CREATE TABLE idx (key TEXT PRIMARY KEY, up INTEGER, down INTEGER, paired INTEGER)"
        )

    def add(self, key: str, label: str, offset: int) -> tuple[int, int] | None:
        """Record the first offset per side; returns (up, down) the first time both sides exist."""
        row = self.db.execute("SELECT up, down, paired FROM idx WHERE key = ?", (key,)).fetchone()
        up, down, paired = row or (None, None, 0)
        up, down = (
            (offset if label == "up" and up is None else up),
            (offset if label == "down" and down is None else down),
        )
        ready = up is not None and down is not None and not paired
        self.db.execute("INSERT OR REPLACE INTO idx VALUES (?, ?, ?, ?)", (key, up, down, int(paired or ready)))
        return (up, down) if ready else None

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()


class RunOutputs:
    """Route extracted feedback records into the run's files; count what was skipped and why."""

    def __init__(self, folder: Path, settings: TransformSettings):
        self.settings = settings
        self.sinks = {name: (JsonArraySink if name.endswith(".json") else JsonlSink)(folder / name) for name in FILES}
        self.counts: Counter = Counter(records=0, corrections=0)
        self.skipped: Counter = Counter()
        self.index = PromptIndex()  # offsets into sft.messages.jsonl (up) / annotation_queue.jsonl (down)

    def add(self, record: dict) -> None:
        """One record from the extractor: ``trace_id``, ``score_id``, ``label`` up/down/None, ``trace``."""
        self.counts["records"] += 1
        if record.get("label") not in ("up", "down"):
            self.skipped["unknown score value"] += 1  # neither an up nor a down value of the settings
            return
        trace = record.get("trace") or {}
        try:
            msgs = to_messages(trace.get("input"), trace.get("output"), self.settings)
        except Skip as why:
            self.skipped[str(why)] += 1
            return
        meta = {
            "trace_id": record["trace_id"],
            "score_id": record.get("score_id"),
            "timestamp": trace.get("timestamp"),
            "label": record["label"],
        }
        key = prompt_key(msgs)
        if record["label"] == "up":
            offset = self.sinks["sft.messages.jsonl"].write({"messages": msgs, **meta})
            self.sinks["sft.sharegpt.jsonl"].write(sharegpt_row(msgs, **meta))
            self.sinks["sft.alpaca.jsonl"].write(alpaca_row(msgs, **meta))
        else:
            row = {"messages": msgs, **meta, "comment": record.get("comment")}
            offset = self.sinks["annotation_queue.jsonl"].write(row)
            self.sinks["label_studio_tasks.json"].write(ls_task(row))
        both = self.index.add(key, record["label"], offset)
        if both:
            up = self.sinks["sft.messages.jsonl"].read_at(both[0])
            down = self.sinks["annotation_queue.jsonl"].read_at(both[1])
            self.sinks["pairs.jsonl"].write(
                {
                    "prompt": up["messages"][:-1],
                    "chosen": up["messages"][-1]["content"],
                    "rejected": down["messages"][-1]["content"],
                    "source": "thumbs",
                    "chosen_trace_id": up["trace_id"],
                    "rejected_trace_id": down["trace_id"],
                }
            )

    def add_corrections(self, golden: list[dict], pairs: list[dict], skipped: Counter) -> None:
        """Label Studio corrections taken by this run (``label_studio.golden_row`` / ``pair_row``)."""
        for row in golden:
            self.sinks["golden.messages.jsonl"].write(row)
        for pair in pairs:
            self.sinks["pairs.jsonl"].write(pair)
        self.counts["corrections"] += len(golden)
        for reason, n in skipped.items():
            self.skipped[f"label studio: {reason}"] += n

    def close(self) -> dict:
        self.index.close()
        return {name: sink.close() for name, sink in self.sinks.items()}
