"""Multiple-choice accuracy: lettered choices, the model's choice parsed robustly,
an ensemble of K samples decided by majority vote.

Sets are JSON (a list) or JSONL, one item each: ``{"id", "question", "choices", "answer"}`` where
``choices`` is a list (lettered A, B, ...) or a ``{"A": ..., "B": ...}`` object and ``answer`` a
letter. Errors name the file and item. Shipped: ``builtin:mc`` (general health literacy, written
for this project).

    items = load_mc("builtin:mc")
    parse_choice("The answer is (B).", "ABCD")   # -> "B"
    result = score_mc(items, answers)            # answers[i]: K sampled answers for item i
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from irsflow.errors import DatasetError

MC_SYSTEM = "Answer the multiple-choice question. Reply with the letter of the single best choice first."


@dataclass(frozen=True)
class MCItem:
    id: str
    question: str
    choices: dict[str, str]
    answer: str

    @property
    def letters(self) -> str:
        return "".join(self.choices)

    def prompt(self, system: str = MC_SYSTEM) -> list[dict]:
        body = self.question + "\n" + "\n".join(f"{k}) {v}" for k, v in self.choices.items())
        return [{"role": "system", "content": system}, {"role": "user", "content": body + "\nAnswer:"}]


def _resolve(spec: str) -> Path:
    if spec.startswith("builtin:"):
        p = Path(str(resources.files("irsflow") / "data" / f"{spec.split(':', 1)[1]}_choices.jsonl"))
    else:
        p = Path(spec).expanduser()
    if not p.is_file():
        raise DatasetError(f"multiple-choice set: no such file {p}")
    return p


def _item(obj, where: str) -> MCItem:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    extra = sorted(set(obj) - {"id", "question", "choices", "answer", "meta"})
    if extra:
        raise DatasetError(f"{where}: unknown field {extra[0]!r}")
    q, choices, ans = obj.get("question"), obj.get("choices"), obj.get("answer")
    if not isinstance(q, str) or not q.strip():
        raise DatasetError(f"{where}: 'question' must be a non-empty string")
    if isinstance(choices, list):
        choices = {chr(65 + i): c for i, c in enumerate(choices)}
    if (
        not isinstance(choices, dict)
        or not 2 <= len(choices) <= 26
        or not all(
            isinstance(k, str) and re.fullmatch(r"[A-Z]", k) and isinstance(v, str) and v.strip()
            for k, v in choices.items()
        )
    ):
        raise DatasetError(f"{where}: 'choices' must be 2-26 non-empty strings (a list, or an object keyed A, B, ...)")
    if not isinstance(ans, str) or ans.strip().upper() not in choices:
        raise DatasetError(f"{where}: 'answer' must be one of the choice letters {''.join(choices)}, got {ans!r}")
    return MCItem(str(obj.get("id", where.rsplit(":", 1)[-1])), q.strip(), dict(choices), ans.strip().upper())


def load_mc(spec: str, limit: int | None = None) -> list[MCItem]:
    from irsflow.dataset import jsonl_objects

    p = _resolve(spec)
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{p}: malformed JSON (line {err.lineno}: {err.msg})") from None
        if not isinstance(data, list):
            raise DatasetError(f"{p}: expected a JSON list of questions")
        items = [_item(o, f"{p}: item {i}") for i, o in enumerate(data)]
    else:
        items = [_item(o, where) for where, _, o in jsonl_objects(text, str(p))]
    ids = Counter(i.id for i in items)
    dup = [k for k, v in ids.items() if v > 1]
    if dup:
        raise DatasetError(f"{p}: duplicate id {dup[0]!r}")
    if not items:
        raise DatasetError(f"{p}: no questions")
    return items[:limit] if limit else items


_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)


def parse_choice(text: str, letters: str = "ABCD", choices: dict[str, str] | None = None) -> str | None:
    """The letter an answer picks, or None. Tried in order: an explicit "answer is X" / "option X"
    phrase; a leading letter ("B", "b)", "(C) ...", "**D**."); a single parenthesised letter;
    the text of exactly one choice; a single standalone capital letter followed by punctuation."""
    t = _THINK.sub(" ", text or "").strip()
    if not t:
        return None
    L = re.escape(letters)
    pats = [
        rf"(?:answer|choice|option)\s*(?:is|would be|:)?\s*(?:option\s*)?[\*\(\[]*([{L}])\b",
        rf"^[\s\*\(\[]*([{L}])(?:[\)\]\.:,\*]|\s*$|\s+(?:because|since|as|-))",
    ]
    for pat in pats:
        m = re.search(pat, t, re.I | re.M)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
    paren = set(re.findall(rf"\(([{L}])\)", t))
    if len(paren) == 1:
        return paren.pop()
    if choices:
        low = t.lower()
        hits = [k for k, v in choices.items() if v.strip().lower() in low]
        if len(hits) == 1:
            return hits[0]
    lone = set(re.findall(rf"(?<![\w'])([{L}])(?=[\.\)\]:,]|\s*$)", t))
    return lone.pop() if len(lone) == 1 else None


def majority(votes: list[str | None]) -> str | None:
    """Most common parsed letter; ties go to the letter voted first; None if nothing parsed."""
    counted = Counter(v for v in votes if v)
    if not counted:
        return None
    top = max(counted.values())
    return next(v for v in votes if v and counted[v] == top)


def score_mc(items: list[MCItem], answers: list[list[str]]) -> dict:
    """Accuracy of the majority vote over each item's K answers, plus per-item detail."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} items but {len(answers)} answer lists")
    rows = []
    for item, texts in zip(items, answers):
        votes = [parse_choice(a, item.letters, item.choices) for a in texts]
        pick = majority(votes)
        rows.append(
            {
                "id": item.id,
                "answer": item.answer,
                "votes": votes,
                "pick": pick,
                "correct": int(pick == item.answer),
                "texts": texts,
            }
        )
    n = len(rows)
    return {
        "accuracy": sum(r["correct"] for r in rows) / n if n else 0.0,
        "n": n,
        "k": len(answers[0]) if answers else 0,
        "unparsed": sum(r["pick"] is None for r in rows),
        "items": rows,
    }
