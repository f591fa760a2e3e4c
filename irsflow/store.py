"""Job directories, atomic writes and content hashes.

    <data dir>/jobs/train_<job_id>/
        config.json  metrics.jsonl  samples.jsonl  status.json  train.log
        checkpoints/iter_<n>/  checkpoints/final/     LoRA adapters
        phases/iter_<n>/candidates.jsonl  scores.jsonl  manifest.json   phase outputs, their hashes

``<data dir>`` is ``$IRSFLOW_DATA_DIR`` or ``./data``. Every write goes to a temporary file in the
same folder and is renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from irsflow.errors import InputError

_append_lock = threading.Lock()


def data_dir() -> Path:
    return Path(os.environ.get("IRSFLOW_DATA_DIR", "./data")).expanduser().resolve()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_job_id() -> str:
    """``20260203T120000Z-1a2b``: sortable by start time, unique when two jobs start at once."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append by rewriting through a temp file: readers never see a torn line."""
    new = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with _append_lock:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        atomic_write_text(path, old + new)


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of JSONL text, split on ``\\n`` only (a ``\\r`` before it is dropped).
    Not ``str.splitlines()``: it also splits on U+2028, U+2029, U+0085 and other separators, which
    ``json.dumps(..., ensure_ascii=False)`` writes raw inside strings, so one row would read as two."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        yield lineno, line.removesuffix("\r")


def iter_jsonl(text: str, source: str, error: type[Exception] = InputError) -> Iterator[tuple[str, int, Any]]:
    """``(where, lineno, value)`` per non-blank line of JSONL text; ``where`` is ``source:line``.
    A line that is not valid JSON raises ``error`` naming ``source:line`` and the column."""
    for lineno, line in jsonl_lines(text):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
        yield where, lineno, value


def read_jsonl(path: Path) -> list[dict]:
    """Every row of a JSONL file (none when it does not exist); a bad line raises ``InputError``
    naming the file and line."""
    if not path.exists():
        return []
    try:
        text = path.read_bytes().decode("utf-8")  # bytes: no newline translation before the split
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    return [row for _, _, row in iter_jsonl(text, str(path))]


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``target``; on success it replaces ``target`` whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{secrets.token_hex(3)}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a folder's relative names and contents."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def hash_or_missing(path: Path) -> str:
    """``hash_path``, or ``"missing"`` for a path that does not exist (an optional input of a cache key)."""
    return hash_path(path) if path.exists() else "missing"


class JobStore:
    """Everything one job writes, addressed by job id."""

    def __init__(self, job_id: str, root: Path | None = None):
        job_id = job_id.removeprefix("train_")
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise InputError(f"job id: invalid {job_id!r}")
        self.job_id = job_id
        self.dir = (root or data_dir()) / "jobs" / f"train_{job_id}"

    # --- paths -----------------------------------------------------------------------------
    config_path = property(lambda self: self.dir / "config.json")
    metrics_path = property(lambda self: self.dir / "metrics.jsonl")
    samples_path = property(lambda self: self.dir / "samples.jsonl")
    status_path = property(lambda self: self.dir / "status.json")
    log_path = property(lambda self: self.dir / "train.log")

    def checkpoint(self, name: int | str) -> Path:
        return self.dir / "checkpoints" / (f"iter_{name}" if isinstance(name, int) else name)

    def phase_dir(self, iteration: int) -> Path:
        return self.dir / "phases" / f"iter_{iteration}"

    def exists(self) -> bool:
        return self.config_path.exists()

    # --- writes ------------------------------------------------------------------------------
    def create(self, config: dict) -> None:
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, config)

    def metric(self, iteration: int, phase: str, **fields: Any) -> dict:
        row = {"ts": utc_now(), "iter": iteration, "phase": phase, **fields}
        append_jsonl(self.metrics_path, [row])
        return row

    def add_samples(self, rows: list[dict]) -> None:
        append_jsonl(self.samples_path, rows)

    def samples_with_candidates(self, iterations: list[int] | None = None) -> Iterator[tuple[int, dict, dict]]:
        """``(iteration, samples.jsonl row, that question's candidates.jsonl row)`` for every (or
        the given) iteration; each iteration's candidates file is read once."""
        by_iter: dict[int, dict[str, dict]] = {}
        for s in read_jsonl(self.samples_path):
            it = int(s["iter"])
            if iterations and it not in iterations:
                continue
            if it not in by_iter:
                by_iter[it] = {r["id"]: r for r in read_jsonl(self.phase_dir(it) / "candidates.jsonl")}
            yield it, s, by_iter[it].get(s["id"], {})

    def replace_samples(self, iteration: int, rows: list[dict]) -> None:
        """Set iteration ``iteration``'s rows of samples.jsonl (a re-scored iteration replaces its rows)."""
        with _append_lock:
            kept = [r for r in read_jsonl(self.samples_path) if r.get("iter") != iteration]
            write_jsonl(self.samples_path, kept + rows)

    def update_status(self, **fields: Any) -> dict:
        with _append_lock:
            status = self.read_status()
            status.update(fields, job_id=self.job_id, updated_at=utc_now())
            atomic_write_json(self.status_path, status)
        return status

    # --- reads -------------------------------------------------------------------------------
    def read_status(self) -> dict:
        if not self.status_path.exists():
            return {}
        return json.loads(self.status_path.read_text(encoding="utf-8"))

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def read_config(self) -> dict:
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    @contextmanager
    def log_to_file(self, logger_name: str = "irsflow") -> Iterator[logging.Logger]:
        """Mirror the library logger into ``train.log`` for the duration of the block."""
        logger = logging.getLogger(logger_name)
        self.dir.mkdir(parents=True, exist_ok=True)
        if any(
            isinstance(h, logging.FileHandler) and h.baseFilename == str(self.log_path.resolve())
            for h in logger.handlers
        ):
            yield logger  # an outer block (the job's flow) already writes this file: no doubled lines
            return
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            yield logger
        finally:
            logger.removeHandler(handler)
            handler.close()


ProgressFn = Callable[[float], None]


def no_progress(_: float) -> None:
    return None
