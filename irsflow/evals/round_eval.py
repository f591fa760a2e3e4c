"""The EVALUATING phase of a round: the held-out answers (``irsflow.evals.heldout``) where the job holds
questions out, and the round eval where it is on (``stage_config.eval_each_round``).

The round eval answers the first ``stage_config.eval_questions`` training questions with the round's
new adapter (sampling as the job does), writes ``eval_round_<n>.json`` (dialogue metrics, diversity,
the request's reward means, the round's training figures) and rebuilds the job's ``CHANGELOG.md``
with one line per evaluated round.

    out = run_evaluation(store, req, 2, start_adapter=None, weights={"rel": 1.0})   # the whole phase
    doc = run_round_eval(store, req, 2, weights={"rel": 1.0})                       # the round eval only
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from irsflow.evals.answers import answer_and_score
from irsflow.evals.heldout import NO_SPEND, evaluate_heldout, heldout_path
from irsflow.loop import EVALUATING, TRAINING
from irsflow.loop.phases import phase_reporter
from irsflow.loop.questions import train_questions
from irsflow.rewards.dialogue import dialogue_metrics, diversity, write_eval_round
from irsflow.stages import get_stage
from irsflow.store import JobStore, ProgressFn, atomic_write_text, hash_path

if TYPE_CHECKING:
    from irsflow.config import TrainRequest

log = logging.getLogger("irsflow.evals")
HEADLINE = ("question_ratio", "mean_answer_words", "distinct_2", "reward")
SEED_OFFSET = 10_000  # generation seeds of the round eval: apart from the rounds' and the held-out answers'


def eval_round_path(store: JobStore, iteration: int) -> Path:
    return store.dir / f"eval_round_{iteration}.json"


def run_evaluation(
    store: JobStore,
    req: TrainRequest,
    iteration: int,
    start_adapter: str | None,
    weights: dict[str, float],
    progress: ProgressFn | None = None,
) -> dict:
    """The EVALUATING phase: the held-out answers of the round's adapter (and, in round 1, of the start
    model ``start_adapter``) where the job holds questions out, then the round eval where it is on."""
    stage = get_stage(req.stage)
    report = phase_reporter(store, iteration, EVALUATING, progress)
    report(0)
    out: dict = {"seconds": 0.0}
    if stage.evaluates_heldout(req):
        if iteration == 1 or not heldout_path(store, 0).exists():
            out["heldout_start"] = evaluate_heldout(
                store, req, 0, start_adapter if iteration == 1 else store.read_config().get("init_adapter_path")
            )
        out["heldout"] = evaluate_heldout(
            store, req, iteration, str(store.checkpoint(iteration)), progress=lambda p: report(0.5 * p)
        )
        out["seconds"] += out["heldout"]["seconds"] + out.get("heldout_start", {}).get("seconds", 0.0)
        out["path"] = str(heldout_path(store, iteration))
    if stage.round_eval(req):
        doc = run_round_eval(store, req, iteration, weights, progress=None)
        out.update({**doc, "seconds": out["seconds"] + doc["seconds"]})
    report(100)
    return out


def run_round_eval(
    store: JobStore, req: TrainRequest, iteration: int, weights: dict[str, float], progress: ProgressFn | None = None
) -> dict:
    """Answer the round's eval questions with its adapter; score them with ``weights`` (the round's)."""
    report = phase_reporter(store, iteration, EVALUATING, progress)
    report(0)
    if req.teacher is not None and req.uses_teacher():
        weights = {k: v for k, v in weights.items() if k not in NO_SPEND}  # no teacher spend on evals
    adapter = str(store.checkpoint(iteration))
    scored = answer_and_score(
        req,
        adapter,
        train_questions(req)[: req.stage_config.eval_questions],
        weights,
        iteration=SEED_OFFSET + iteration,
        sampling=req.shared.sampling,
        progress=lambda p: report(0.8 * p),
    )
    rows, answers = scored.rows, scored.answers
    training = [
        m for m in store.read_metrics() if m.get("iter") == iteration and m.get("phase") == TRAINING and "loss" in m
    ]
    results = {
        "stage": req.stage,
        "job_id": store.job_id,
        "adapter": adapter,
        "adapter_sha256": hash_path(store.checkpoint(iteration)),
        "n_questions": len(rows),
        "sampling": rows[0]["sampling"] if rows else None,
        "dialogue": dialogue_metrics(
            [
                [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": a}]
                for r, a in zip(rows, answers)
            ]
        ),
        "diversity": diversity(answers),
        "rewards": (
            {
                "weighted_mean": round(sum(scored.rewards) / max(len(scored.rewards), 1), 6),
                **{k: (None if v is None else round(v, 6)) for k, v in scored.means.items()},
            }
            if scored.totals is not None
            else {}
        ),
        "training": training[-1] if training else None,
        "answers": [{"id": r["id"], "answer": a} for r, a in zip(rows, answers)],
    }
    doc = write_eval_round(eval_round_path(store, iteration), iteration, results)
    rebuild_changelog(store, req)
    store.metric(
        iteration,
        EVALUATING,
        question_ratio=round(results["dialogue"]["question_ratio"], 4),
        mean_answer_words=round(results["dialogue"]["mean_answer_words"], 2),
        distinct_2=round(results["diversity"]["distinct_2"], 4),
        reward=results["rewards"].get("weighted_mean"),
    )
    report(100)
    log.info(
        "round %d eval: question ratio %.2f, %.1f words, distinct-2 %.2f, reward %s",
        iteration,
        results["dialogue"]["question_ratio"],
        results["dialogue"]["mean_answer_words"],
        results["diversity"]["distinct_2"],
        results["rewards"].get("weighted_mean"),
    )
    return {
        "path": str(eval_round_path(store, iteration)),
        "sha256": hash_path(eval_round_path(store, iteration)),
        "seconds": scored.seconds,
        "dialogue": results["dialogue"],
        "diversity": results["diversity"],
        "rewards": results["rewards"],
        "round": doc["round"],
    }


def _headline(doc: dict) -> dict:
    return {
        "question_ratio": doc["dialogue"]["question_ratio"],
        "mean_answer_words": doc["dialogue"]["mean_answer_words"],
        "distinct_2": doc["diversity"]["distinct_2"],
        "reward": (doc.get("rewards") or {}).get("weighted_mean"),
    }


def changelog_line(doc: dict, before: dict | None) -> str:
    """One round's headline figures, each with its change since the round ``before``."""
    now, prev = _headline(doc), _headline(before) if before else None
    parts = [
        f"{k} {now[k]:.3f}" + (f" ({now[k] - prev[k]:+.3f})" if prev and prev[k] is not None else "")
        for k in HEADLINE
        if now[k] is not None
    ]
    loss = (doc.get("training") or {}).get("loss")
    return (
        f"- round {doc['round']} ({doc['created_at'][:19]}Z, {doc['stage']}): "
        + ", ".join(parts)
        + (f"; training loss {loss:.4f}" if loss is not None else "")
        + f"; checkpoint `{doc['adapter']}`"
    )


def rebuild_changelog(store: JobStore, req: TrainRequest) -> str:
    """``CHANGELOG.md`` from every ``eval_round_<n>.json`` there is (a rerun round replaces its line)."""
    docs = []
    for it in range(1, req.shared.n_iterations + 1):
        p = eval_round_path(store, it)
        if p.exists():
            docs.append(json.loads(p.read_text(encoding="utf-8")))
    lines = [f"# Changelog of job {store.job_id} ({req.stage})", ""]
    lines += [changelog_line(doc, docs[i - 1] if i else None) for i, doc in enumerate(docs)]
    text = "\n".join(lines) + "\n"
    atomic_write_text(store.dir / "CHANGELOG.md", text)
    return text
