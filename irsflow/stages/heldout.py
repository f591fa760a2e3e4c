"""Held-out evaluation and early stopping: does a job's training still help on questions it never
trained on, and should it go on?

Every job whose question set is large enough holds out a share (``heldout`` in the request;
``irsflow.loop.questions``). The start model (round 0) and each round's adapter answer those questions
greedily; the answers are scored with the job's starting reward weights (fixed, so rounds compare),
and ``heldout_round_<n>.json`` keeps each answer's reward; ``metrics.jsonl`` gets a ``HELDOUT`` row.
With ``early_stop`` set, ``stop_decision`` says when to stop (no gain for ``patience`` rounds, or
diversity / length drifting past their bounds) and ``best_round`` which adapter becomes final.

    doc = evaluate_heldout(store, req, round_=2, adapter="checkpoints/iter_2")
    stop, why = stop_decision(heldout_history(store, 2), req.early_stop)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from irsflow.loop.generate import generate_candidates
from irsflow.loop.questions import job_questions
from irsflow.loop.scoring import score_candidates
from irsflow.models import resolve_model
from irsflow.rewards import RewardEnv, build_rewards
from irsflow.rewards.dialogue import diversity, words
from irsflow.rewards.similarity import load_similarity
from irsflow.store import JobStore, ProgressFn, atomic_write_json, no_progress

if TYPE_CHECKING:
    from irsflow.config import EarlyStopConfig, TrainRequest

log = logging.getLogger("irsflow.heldout")
HELDOUT = "HELDOUT"
NO_SPEND = ("teacher", "rlaif")  # held-out answers are scored by the rules and similarity rewards only


def heldout_path(store: JobStore, round_: int) -> Path:
    return store.dir / f"heldout_round_{round_}.json"


def eval_weights(req: TrainRequest) -> dict[str, float]:
    """The job's starting reward weights, without the paid teacher: the same yardstick every round."""
    weights = {k: v for k, v in req.irs_config.dw_config.initial_weights.items() if k not in NO_SPEND}
    return weights or {"rel": 1.0}


def evaluate_heldout(store: JobStore, req: TrainRequest, round_: int, adapter: str | None,
                     progress: ProgressFn = no_progress) -> dict:
    """Answer the held-out questions with ``adapter`` (None: the start model), score, write the file
    and the ``HELDOUT`` metrics row; returns the summary (``reward``, ``rewards``, ``distinct_2``,
    ``mean_words``)."""
    _, questions = job_questions(req)
    cfg = req.irs_config
    rows, stats = generate_candidates(
        resolve_model(req.model_id), adapter, questions, n_candidates=1, max_new_tokens=cfg.max_new_tokens,
        sampling=None, seed=req.seed, iteration=20_000 + round_, gen_batch_size=cfg.gen_batch_size,
        top_k=req.top_k, system_prompt=req.system_prompt, load_in_4bit=cfg.load_in_4bit,
        progress=lambda p: progress(0.8 * p))
    answers = [r["candidates"][0]["text"] for r in rows]
    weights = eval_weights(req)
    env = RewardEnv(settings=req.scoring, similarity=load_similarity(req.scoring))
    scored = score_candidates([{"question": r["question"], "context": r["context"], "reference": r.get("reference"),
                                "candidates": [a]} for r, a in zip(rows, answers)],
                              build_rewards(list(weights), env), weights)
    wsum = sum(weights.values()) or 1.0
    per_question = [round(float(t[0]) / wsum, 6) for t in scored.totals]
    summary = {"round": round_, "reward": round(sum(per_question) / len(per_question), 6),
               "rewards": {k: (None if v is None else round(v, 6)) for k, v in scored.means.items()},
               "distinct_2": round(diversity(answers)["distinct_2"], 6),
               "mean_words": round(sum(len(words(a)) for a in answers) / len(answers), 3),
               "n_questions": len(rows), "seconds": round(stats["seconds"], 3)}
    atomic_write_json(heldout_path(store, round_), {
        **summary, "adapter": adapter, "weights": weights,
        "answers": [{"id": r["id"], "answer": a, "reward": s} for r, a, s in zip(rows, answers, per_question)]})
    store.metric(round_, HELDOUT, **summary)
    progress(100)
    log.info("held-out round %d: reward %.4f, distinct-2 %.3f, %.1f words (%d questions)", round_,
             summary["reward"], summary["distinct_2"], summary["mean_words"], len(rows))
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


def stop_decision(history: list[dict], cfg: EarlyStopConfig | None) -> tuple[bool, str | None]:
    """Whether a job should stop after the last round of ``history`` (round 0 = the start model), and why."""
    if cfg is None or len(history) < 2:
        return False, None
    start, last = history[0], history[-1]
    if cfg.distinct2_floor is not None and start["distinct_2"] > 0 \
            and last["distinct_2"] < cfg.distinct2_floor * start["distinct_2"]:
        return True, (f"diversity: held-out distinct-2 {last['distinct_2']:.3f} fell below "
                      f"{cfg.distinct2_floor:g} x the start model's {start['distinct_2']:.3f}")
    if cfg.max_length_drift is not None and start["mean_words"] > 0:
        drift = last["mean_words"] / start["mean_words"] - 1
        if abs(drift) > cfg.max_length_drift:
            return True, (f"length: held-out answers moved {drift:+.0%} from the start model's "
                          f"{start['mean_words']:.1f} words (bound {cfg.max_length_drift:.0%})")
    best = history[0]["reward"]
    since = 0  # rounds since the last gain
    for h in history[1:]:
        if h["reward"] > best + cfg.min_gain:
            best, since = h["reward"], 0
        else:
            since += 1
    if since >= cfg.patience:
        return True, (f"no gain: held-out reward {last['reward']:.4f} has not risen more than {cfg.min_gain:g} "
                      f"above the best {best:.4f} for {since} round(s)")
    return False, None


def best_round(history: list[dict]) -> int | None:
    """The trained round with the highest held-out reward (the earliest on a tie); None without one."""
    trained = [h for h in history if h["round"] >= 1]
    return max(trained, key=lambda h: (h["reward"], -h["round"]))["round"] if trained else None


def conclude(store: JobStore, req: TrainRequest, last_round: int, stop_reason: str | None) -> tuple[str, int]:
    """Pick the job's final adapter and say why: the best round by held-out reward where the job held
    questions out, else its last round; copy it to ``checkpoints/final``, and record the choice (and an
    early stop's reason) in a METRICS row and the status. Returns ``(final path, round)``."""
    from irsflow.loop.phases import finalize

    history = heldout_history(store, last_round)
    best = best_round(history) or last_round
    final = finalize(store, str(store.checkpoint(best)))
    note = {"final_round": best, "rounds_run": last_round,
            "final_by": "held-out reward" if len(history) > 1 else "last round", "stopped_early": stop_reason}
    said = [m for m in store.read_metrics() if m.get("phase") == "METRICS" and "final_round" in m]
    if (len(history) > 1 or stop_reason) and not (said and all(said[-1].get(k) == v for k, v in note.items())):
        store.metric(last_round, "METRICS", **note)  # once, and again only when a rerun decides otherwise
    store.update_status(**note)  # stopped_early None clears an earlier run's reason
    if stop_reason:
        log.info("stopped after round %d of %d: %s; final = round %d", last_round, req.irs_config.n_iterations,
                 stop_reason, best)
    return final, best
