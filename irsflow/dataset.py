"""Question sets: JSONL rows ``{"id"?, "question", "contexts"?: [str], "reference"?, "meta"?}``.
Shipped: ``builtin:demo`` (IRS demo), ``builtin:gold`` and ``builtin:redteam`` (seed 001 teacher
quality checks and RL prompt mixing; medical questions with reference answers).

    from irsflow.dataset import load_questions
    qs = load_questions("builtin:demo", limit=16)

Every problem is reported with the file and line number before any model loads. Rows without
an ``id`` get ``q-<line>``; duplicate ids and empty questions are rejected.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from irsflow.errors import DatasetError
from irsflow.paths import kind_of, read_bytes
from irsflow.store import iter_jsonl

_ALLOWED = {"id", "question", "contexts", "reference", "meta"}


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    contexts: tuple[str, ...] = ()
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def top_contexts(self, top_k: int) -> tuple[str, ...]:
        return self.contexts[:top_k]


def resolve_dataset(spec: str) -> Path:
    """``builtin:demo`` -> the shipped demo set; anything else is a file path."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        path = Path(str(resources.files("irsflow") / "data" / f"{name}_questions.jsonl"))
        if not path.is_file():
            known = sorted(
                p.name.removesuffix("_questions.jsonl")
                for p in Path(str(resources.files("irsflow") / "data")).glob("*_questions.jsonl")
            )
            raise DatasetError(f"dataset: unknown builtin question set {name!r} (known: {', '.join(known)})")
        return path
    path = Path(spec).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError:
        raise DatasetError(f"dataset: no such file: {path}") from None
    if not stat.S_ISREG(mode):
        raise DatasetError(f"dataset: {path} is {kind_of(mode)}, not a JSONL file")
    return path


def _parse_row(obj: Any, where: str, lineno: int) -> Question:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    extra = sorted(set(obj) - _ALLOWED)
    if extra:
        raise DatasetError(f"{where}: unknown field {extra[0]!r} (allowed: {', '.join(sorted(_ALLOWED))})")
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        raise DatasetError(f"{where}: 'question' must be a non-empty string")
    qid = obj.get("id", f"q-{lineno}")
    if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid).strip() == "":
        raise DatasetError(f"{where}: 'id' must be a non-empty string or integer")
    ctx = obj.get("contexts", [])
    if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
        raise DatasetError(f"{where}: 'contexts' must be a list of strings")
    ref = obj.get("reference")
    if ref is not None and not isinstance(ref, str):
        raise DatasetError(f"{where}: 'reference' must be a string")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: 'meta' must be an object")
    return Question(str(qid), q.strip(), tuple(c for c in ctx if c.strip()), ref, meta)


def jsonl_objects(text: str, source: str, error: type[Exception] = DatasetError) -> Iterator[tuple[str, int, Any]]:
    """``(where, lineno, value)`` per non-blank line; malformed JSON raises ``error`` naming
    ``source:line`` and the column."""
    yield from iter_jsonl(text, source, error)  # split on "\n" only: U+2028 may sit raw in a string


def parse_questions(text: str, source: str = "<questions>") -> list[Question]:
    """Parse JSONL text; blank lines are skipped."""
    out: list[Question] = []
    seen: dict[str, int] = {}
    for where, lineno, obj in jsonl_objects(text, source):
        q = _parse_row(obj, where, lineno)
        if q.id in seen:
            raise DatasetError(f"{where}: duplicate id {q.id!r} (first on line {seen[q.id]})")
        seen[q.id] = lineno
        out.append(q)
    if not out:
        raise DatasetError(f"{source}: no questions")
    return out


def load_questions(spec: str, limit: int | None = None) -> list[Question]:
    """Load and validate a whole question set, then keep the first ``limit`` rows."""
    path = resolve_dataset(spec)
    try:
        text = read_bytes("dataset", path, error=DatasetError).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    qs = parse_questions(text, source=str(path))
    return qs[:limit] if limit is not None else qs


def questions_hash(questions: list[Question]) -> str:
    """Content hash of the questions actually used (order-sensitive)."""
    h = hashlib.sha256()
    for q in questions:
        h.update(json.dumps([q.id, q.question, list(q.contexts), q.reference], ensure_ascii=False).encode())
    return h.hexdigest()


def last_user_turn(messages: list[dict]) -> str | None:
    """The content of the last user message with text in a chat (``[{"role", "content"}, ...]``):
    the question a reply or correction answers. None when no user turn has any."""
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user" and m.get("content")), None)


def split_heldout(questions: list[Question], share: float, seed: int) -> tuple[list[Question], list[Question]]:
    """``(train, heldout)``: about ``share`` of the questions held out, seeded. Where every question
    names a topic (``meta.topic``) whole topics are held out, so no topic is in both parts; the
    order of each part is the set's own."""
    if share <= 0 or len(questions) < 2:
        return list(questions), []
    import random

    topics = [q.meta.get("topic") for q in questions]
    by_topic = all(isinstance(t, str) and t for t in topics)
    groups = sorted(set(topics)) if by_topic else [q.id for q in questions]
    rng = random.Random(seed)
    rng.shuffle(groups)
    want, held, n = max(1, round(share * len(questions))), set(), 0
    size = (lambda g: topics.count(g)) if by_topic else (lambda g: 1)
    for g in groups:
        # take a topic only if it brings the held-out count closer to the share (a big topic may not fit)
        if abs(want - n - size(g)) < abs(want - n) and len(questions) - n - size(g) >= 1:
            held.add(g)
            n += size(g)
    if not held:  # every topic overshoots: the smallest one, if something is left to train on
        small = min(groups, key=size)
        if len(questions) - size(small) >= 1:
            held.add(small)
    key = (lambda q: q.meta.get("topic")) if by_topic else (lambda q: q.id)
    return [q for q in questions if key(q) not in held], [q for q in questions if key(q) in held]
