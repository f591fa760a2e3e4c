"""Held-out evaluation: does a job's training still help on questions it never trained on?

Every job whose question set is large enough holds out a share (``heldout`` in the request;
``irsflow.loop.questions``). The start model (round 0) and each round's adapter answer those questions
greedily; the answers are scored with the job's starting reward weights (fixed, so rounds compare),
``heldout_round_<n>.json`` keeps each answer's reward and ``metrics.jsonl`` gets a ``HELDOUT`` row.
The job loop reads these summaries to stop early and to choose its final adapter (``irsflow.jobs.finish``).

    summary = evaluate_heldout(store, req, round_=2, adapter="checkpoints/iter_2")
    history = heldout_history(store, 2)        # rounds 0..2, without the answers
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from irsflow.evals.answers import answer_and_score
from irsflow.loop.questions import job_questions
from irsflow.rewards.dialogue import diversity, words
from irsflow.store import JobStore, ProgressFn, atomic_write_json, no_progress

if TYPE_CHECKING:
    from irsflow.config import TrainRequest

log = logging.getLogger("irsflow.heldout")
HELDOUT = "HELDOUT"
NO_SPEND = ("teacher", "rlaif")  # held-out answers are scored by the rules and similarity rewards only
SEED_OFFSET = 20_000  # generation seeds of held-out answers: apart from the rounds' and the round eval's


def heldout_path(store: JobStore, round_: int) -> Path:
    return store.dir / f"heldout_round_{round_}.json"


def eval_weights(req: TrainRequest) -> dict[str, float]:
    """The job's starting reward weights, without the paid teacher: the same yardstick every round."""
    weights = {k: v for k, v in req.shared.dw_config.initial_weights.items() if k not in NO_SPEND}
    return weights or {"rel": 1.0}


def evaluate_heldout(
    store: JobStore, req: TrainRequest, round_: int, adapter: str | None, progress: ProgressFn = no_progress
) -> dict:
    """Answer the held-out questions with ``adapter`` (None: the start model), score, write the file
    and the ``HELDOUT`` metrics row; returns the summary (``reward``, ``rewards``, ``distinct_2``,
    ``mean_words``)."""
    _, questions = job_questions(req)
    scored = answer_and_score(
        req, adapter, questions, eval_weights(req), iteration=SEED_OFFSET + round_, progress=lambda p: progress(0.8 * p)
    )
    answers, per_question = scored.answers, [round(r, 6) for r in scored.rewards]
    summary = {
        "round": round_,
        "reward": round(sum(per_question) / len(per_question), 6),
        "rewards": {k: (None if v is None else round(v, 6)) for k, v in scored.means.items()},
        "distinct_2": round(diversity(answers)["distinct_2"], 6),
        "mean_words": round(sum(len(words(a)) for a in answers) / len(answers), 3),
        "n_questions": len(answers),
        "seconds": round(scored.seconds, 3),
    }
    atomic_write_json(
        heldout_path(store, round_),
        {
            **summary,
            "adapter": adapter,
            "weights": scored.weights,
            "answers": [{"id": q.id, "answer": a, "reward": s} for q, a, s in zip(questions, answers, per_question)],
        },
    )
    store.metric(round_, HELDOUT, **summary)
    progress(100)
    log.info(
        "held-out round %d: reward %.4f, distinct-2 %.3f, %.1f words (%d questions)",
        round_,
        summary["reward"],
        summary["distinct_2"],
        summary["mean_words"],
        len(answers),
    )
    return summary


def heldout_history(store: JobStore, upto: int) -> list[dict]:
    """The held-out summaries of rounds 0..upto that exist, in order."""
    out = []
    for r in range(0, upto + 1):
        p = heldout_path(store, r)
        if p.exists():
            doc = json.loads(p.read_text(encoding="utf-8"))
            out.append({k: v for k, v in doc.items() if k not in ("answers",)})
    return out
