"""The data each stage trains on, built from the job dir and the request's files.

rows = onpolicy_rows(store, req, 2)       # ChatML rows + sampling metadata + score/weight
anchors = load_anchors(req, questions)    # anchor dialogues (file, else the references)
pairs = preference_pairs(store, req, 2)   # this round's best-vs-worst + the pairs files
kto = kto_examples(store, req, 2)         # desirable/undesirable completions
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from irsflow.dataset import Question, jsonl_objects
from irsflow.errors import InputError
from irsflow.loop.generate import build_messages
from irsflow.loop.questions import train_questions
from irsflow.paths import read_text
from irsflow.stages.pairs import _messages, irs_pairs, kto_rows, load_pairs
from irsflow.store import JobStore, read_jsonl

if TYPE_CHECKING:
    from irsflow.settings import JobRequest


def reference_rows(req: JobRequest, questions: list[Question] | None = None) -> list[dict]:
    """Every question of the set that has a reference answer, as ``{"prompt", "completion", "weight": 1}``
    (prompted exactly as generation prompts it)."""
    questions = questions if questions is not None else train_questions(req)
    return [
        {
            "prompt": build_messages(q, req.top_k, req.system_prompt),
            "completion": [{"role": "assistant", "content": q.reference}],
            "weight": 1.0,
        }
        for q in questions
        if q.reference and q.reference.strip()
    ]


def load_anchors(req: JobRequest, questions: list[Question] | None = None) -> list[dict]:
    """Anchor examples ``{"prompt", "completion", "weight": 1}``: the ``anchors`` file, else every
    question of the set that has a reference answer (prompted exactly as generation prompts it)."""
    sc = req.stage_config
    if sc.anchors:
        p = Path(sc.anchors).expanduser()
        out = []
        for where, _, row in jsonl_objects(read_text("stage_config.anchors", p), str(p), InputError):
            msgs = _messages(row.get("messages") if isinstance(row, dict) else None, where, "messages")
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2 or not msgs[-1]["content"].strip():
                raise InputError(f"{where}: 'messages' must end with a non-empty assistant turn after a prompt")
            out.append({"prompt": msgs[:-1], "completion": [msgs[-1]], "weight": 1.0})
        return out
    out = reference_rows(req, questions)
    if not out:
        raise InputError(f"stage_config.anchors: not set, and {req.dataset} has no reference answers to anchor on")
    return out


def scored_answers(store: JobStore, iteration: int):
    """Every sampled answer of a round: ``(sample, candidates row, index, candidate, score)``, the
    score being the weighted total over the sum of the weights (in [0, 1] for rewards in [0, 1])."""
    for _, s, row in store.samples_with_candidates([iteration]):
        wsum = sum(s["weights"].values()) or 1.0
        for j, c in enumerate(s["candidates"]):
            yield s, row, j, c, c["total"] / wsum


def onpolicy_rows(store: JobStore, req: JobRequest, iteration: int) -> list[dict]:
    """Every non-empty sampled answer of the round as a ChatML dialogue with its sampling settings,
    its rewards, ``score`` (clipped to [0, 1]) and ``weight`` (score, floored)."""
    floor = req.stage_config.weight_floor
    out = []
    for s, row, j, c, score in scored_answers(store, iteration):
        if not c["text"].strip():
            continue
        score = min(1.0, max(0.0, score))
        out.append(
            {
                "messages": row["prompt"] + [{"role": "assistant", "content": c["text"]}],
                "meta": {
                    "id": s["id"],
                    "round": iteration,
                    "candidate": j,
                    "sampling": row["sampling"],
                    "finish_reason": c["finish_reason"],
                    "rewards": c["rewards"],
                },
                "score": round(score, 6),
                "weight": round(max(floor, score), 6),
            }
        )
    return out


def onpolicy_examples(path: Path) -> list[dict]:
    return [
        {"prompt": r["messages"][:-1], "completion": [r["messages"][-1]], "weight": r["weight"]}
        for r in read_jsonl(path)
    ]


def _pairs(store: JobStore, req: JobRequest, iteration: int) -> list[dict]:
    """This round's best-vs-worst candidates (``from_candidates``) and the ``pairs`` files."""
    sc = req.stage_config
    pairs = irs_pairs(store, sc.min_margin, [iteration]) if sc.from_candidates else []
    for f in sc.pairs:
        pairs += [{**p, "source": p.get("source", Path(f).name)} for p in load_pairs(f)]
    return pairs


def preference_pairs(store: JobStore, req: JobRequest, iteration: int) -> list[dict]:
    pairs = _pairs(store, req, iteration)
    if not pairs:
        raise InputError(
            f"stage_config.min_margin: round {iteration} has no preference pairs (no candidates "
            f"{req.stage_config.min_margin} apart and no pairs files); lower it or add stage_config.pairs"
        )
    return pairs


def kto_examples(store: JobStore, req: JobRequest, iteration: int) -> list[dict]:
    """Unpaired examples: each pair's chosen (desirable) and rejected (undesirable) answer, pairs
    as for DPO (this round's candidates, the pairs files), plus the thumbs files."""
    sc = req.stage_config
    rows = []
    for p in _pairs(store, req, iteration):
        rows += [
            {"prompt": p["prompt"], "completion": p["chosen"], "label": True},
            {"prompt": p["prompt"], "completion": p["rejected"], "label": False},
        ]
    if sc.kto_up:
        rows += kto_rows(sc.kto_up, sc.kto_down)
    if not rows or len({r["label"] for r in rows}) < 2:
        raise InputError(
            f"stage_config.min_margin: round {iteration} has no desirable and undesirable examples "
            "for KTO; lower it or add pairs or kto_up/kto_down"
        )
    return rows
