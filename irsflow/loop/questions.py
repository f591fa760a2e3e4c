"""The questions a job trains on and the ones it holds out (``heldout`` in the request).

train, heldout = job_questions(req)      # heldout == [] when the split is off
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from irsflow.dataset import Question, load_questions, split_heldout

if TYPE_CHECKING:
    from irsflow.settings import JobRequest


def job_questions(req: JobRequest) -> tuple[list[Question], list[Question]]:
    """``(train, heldout)`` of the request's question set: the split is seeded by the request's seed, so
    every phase of a job (and a rerun) sees the same parts. Held-out questions past
    ``heldout.max_questions`` are neither trained on nor answered."""
    questions = load_questions(req.dataset, req.n_questions)
    if not req.holds_out() or not req.heldout.active(len(questions)):
        return questions, []
    seed = req.seed if req.heldout.seed is None else req.heldout.seed
    train, heldout = split_heldout(questions, req.heldout.share, seed)
    return train, heldout[: req.heldout.max_questions]


def train_questions(req: JobRequest) -> list[Question]:
    return job_questions(req)[0]


def heldout_questions(req: JobRequest) -> list[Question]:
    """The held-out part; reads nothing when the request holds nothing out (old jobs resume without
    their question set's file, as before the split)."""
    return job_questions(req)[1] if req.holds_out() else []


def heldout_key(req: JobRequest) -> dict:
    """What the split adds to a phase's cache key: the held-out ids (nothing when the split is off)."""
    heldout = heldout_questions(req)
    return {"heldout": [q.id for q in heldout]} if heldout else {}
