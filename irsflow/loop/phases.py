"""The phases of a round, and the two every sampling stage shares, as plain functions over a job
directory (no Prefect here): ``run_generate`` (GENERATING) and ``run_score`` (SCORING). Training is
each stage's own (``irsflow.stages``); the phase names live here and only here.

Each reads its inputs from files, writes its output atomically under ``phases/iter_<n>/`` or
``checkpoints/``, appends the job's ``metrics.jsonl`` rows, keeps ``status.json`` current, and
returns a small JSON-able summary (paths and content hashes, so callers can cache on them).

    gen = run_generate(store, req, 1, adapter=None)
    sc = run_score(store, req, 1, weights={"rel": 1.0, ...}, history=[])

A round's scores end in ``record_scores`` (``score_summary.json``, what the next round starts from):
``run_score`` calls it, and so does a stage that scores inside its training (GRPO).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from irsflow.codebook.retrieval import select_for_questions
from irsflow.loop import GENERATING, SCORING
from irsflow.loop.generate import generate_candidates
from irsflow.loop.questions import train_questions
from irsflow.loop.scoring import score_candidates
from irsflow.loop.weights import DynamicWeights
from irsflow.models import device_name, resolve_model, unsloth_available
from irsflow.retry import halve_on_oom
from irsflow.rewards import build_rewards, reward_env
from irsflow.rewards.similarity import load_similarity
from irsflow.store import JobStore, ProgressFn, atomic_dir, atomic_write_json, hash_path, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from irsflow.settings import JobRequest

log = logging.getLogger("irsflow.phases")
SCORE_SUMMARY = "score_summary.json"
# what every score summary holds (see record_scores)
SUMMARY_KEYS = (
    "avg_reward",
    "best_avg_reward",
    "reward_breakdown",
    "weights",
    "next_weights",
    "slopes",
    "weights_updated",
    "scorer",
)


def score_summary_path(store: JobStore, iteration: int) -> Path:
    """The round's reward means and next weights (written by ``record_scores``)."""
    return store.phase_dir(iteration) / SCORE_SUMMARY


def record_scores(store: JobStore, iteration: int, summary: dict) -> dict:
    """Record round ``iteration``'s scores: ``phases/iter_<n>/score_summary.json`` (atomically), a
    ``METRICS`` row with the same fields, and the status's ``metrics`` (average reward, breakdown and
    the weights the next round uses). Returns ``summary``.

    ``summary`` must hold (more keys are kept, e.g. ``teacher_conflicts``):
        avg_reward        mean weighted reward over every scored answer
        best_avg_reward   mean over each question's best answer (GRPO: the last step's mean reward)
        reward_breakdown  {reward name: mean score or None}, what the dynamic weights observe
        weights           {reward name: weight} the round scored with
        next_weights      the weights after this round's update (``DynamicWeights.observe``)
        slopes, weights_updated   that update's explanation
        scorer            the similarity backend's kind (``embedding`` | ``heuristic``)
    Readers: the next round's inputs (``irsflow.jobs.resume.iteration_inputs`` rebuilds the weights
    and reward history from rounds 1..n-1's summaries, so a stage whose rounds move the weights must
    call this once per round), IRS's training (the weights its candidates were scored with), the
    flow's per-round report."""
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"score summary of round {iteration}: missing {', '.join(missing)}")
    atomic_write_json(score_summary_path(store, iteration), summary)
    store.metric(iteration, "METRICS", **summary)
    store.update_status(
        metrics={
            "avg_reward": summary["avg_reward"],
            "reward_breakdown": summary["reward_breakdown"],
            "current_weights": summary["next_weights"],
        }
    )
    return summary


def phase_reporter(
    store: JobStore, iteration: int, phase: str, extra: ProgressFn | None = None, step: float = 25.0
) -> ProgressFn:
    """Progress callback: status.json on every call, a metrics row every ``step`` percent."""
    last = [-step]

    def report(pct: float) -> None:
        pct = round(float(pct), 1)
        store.update_status(current_round=iteration, current_phase=phase, phase_progress=pct)
        if pct - last[0] >= step or (pct >= 100 and last[0] < 100):
            store.metric(iteration, phase, progress=pct)
            last[0] = pct
        if extra is not None:
            extra(pct)

    return report


def runtime_info(mem: int | None = None) -> dict:
    return {"device": device_name(), "unsloth_available": unsloth_available(), "gpu_mem_used": mem}


def run_generate(
    store: JobStore, req: JobRequest, iteration: int, adapter: str | None, progress: ProgressFn | None = None
) -> dict:
    cfg = req.shared
    report = phase_reporter(store, iteration, GENERATING, progress)
    report(0)
    questions = train_questions(req)
    # one codebook snapshot for the whole phase: every row records the version and hash it used
    rules = None
    if req.codebook.enabled:
        rules = select_for_questions(req.codebook, load_similarity(req.scoring), questions)

    def attempt(batch: int):
        return generate_candidates(
            resolve_model(req.model_id),
            adapter,
            questions,
            n_candidates=cfg.n_candidates,
            max_new_tokens=cfg.max_new_tokens,
            sampling=cfg.sampling,
            seed=req.seed,
            iteration=iteration,
            gen_batch_size=batch,
            top_k=req.top_k,
            system_prompt=req.system_prompt,
            load_in_4bit=cfg.load_in_4bit,
            progress=report,
            extra_system=rules.extra_system if rules else None,
        )

    rows, stats = halve_on_oom(
        attempt,
        cfg.gen_batch_size,
        "irs_config.gen_batch_size",
        f"generate (n_candidates={cfg.n_candidates}, max_new_tokens={cfg.max_new_tokens})",
    )
    stats["gen_batch_size"] = rows[0]["sampling"].get("gen_batch_size") if rows else cfg.gen_batch_size
    if rules is not None:
        for row in rows:
            row["codebook"] = rules.record(row["id"])
    path = store.phase_dir(iteration) / "candidates.jsonl"
    write_jsonl(path, rows)
    store.update_status(runtime=runtime_info(stats["mem_after_release"]))
    log.info(
        "iter %d: generated %d x %d candidates in %.1fs (%.0f tok/s)",
        iteration,
        len(rows),
        cfg.n_candidates,
        stats["seconds"],
        stats["tokens_per_s"],
    )
    return {"path": str(path), "sha256": hash_path(path), **stats}


def run_score(
    store: JobStore,
    req: JobRequest,
    iteration: int,
    weights: dict[str, float],
    history: list[dict],
    progress: ProgressFn | None = None,
    teacher_api_key: str | None = None,
) -> dict:
    """Score with ``weights``, pick the best, then update the weights from ``history`` + this
    iteration's means. Returns the means, the weights used and the next weights. With a teacher
    configured, its calls are cached and billed to ``<job>/teacher_usage.csv``, and teacher/rules
    disagreements of the ``rlaif`` reward go to ``phases/iter_n/teacher_conflicts.jsonl``."""
    t0 = time.perf_counter()
    report = phase_reporter(store, iteration, SCORING, progress)
    report(0)
    rows = read_jsonl(store.phase_dir(iteration) / "candidates.jsonl")
    env = reward_env(
        req.scoring, teacher=req.teacher, teacher_api_key=teacher_api_key, usage_path=store.dir / "teacher_usage.csv"
    )
    rewards = build_rewards(list(weights), env)
    scored = [
        {
            "id": f"{iteration}:{r['id']}",
            "question": r["question"],
            "context": r["context"],
            "reference": r.get("reference"),
            "candidates": [c["text"] for c in r["candidates"]],
        }
        for r in rows
    ]
    result = score_candidates(scored, rewards, weights, progress=report)

    dw = DynamicWeights.resume(weights, history, req.shared.dw_config)
    explain = dw.observe(result.means)

    scores = [
        {
            "id": r["id"],
            "rewards": [result.breakdown(i, c) for c in range(len(r["candidates"]))],
            "totals": [round(float(t), 6) for t in result.totals[i]],
            "best": result.best[i],
        }
        for i, r in enumerate(rows)
    ]
    path = store.phase_dir(iteration) / "scores.jsonl"
    write_jsonl(path, scores)
    samples = []
    for i, r in enumerate(rows):
        b = result.best[i]
        samples.append(
            {
                "iter": iteration,
                "id": r["id"],
                "question": r["question"],
                "chosen": r["candidates"][b]["text"],
                "chosen_index": b,
                "chosen_total": scores[i]["totals"][b],
                "weights": dict(weights),
                "sampling": r["sampling"],
                "candidates": [
                    {
                        "text": c["text"],
                        "rewards": scores[i]["rewards"][j],
                        "total": scores[i]["totals"][j],
                        "finish_reason": c["finish_reason"],
                        "n_tokens": c["n_tokens"],
                    }
                    for j, c in enumerate(r["candidates"])
                ],
            }
        )
    summary = {
        "avg_reward": round(result.avg_reward, 6),
        "best_avg_reward": round(result.best_avg_reward, 6),
        "reward_breakdown": {k: (None if v is None else round(v, 6)) for k, v in result.means.items()},
        "weights": dict(weights),
        "next_weights": explain["weights_after"],
        "slopes": explain["slopes"],
        "weights_updated": explain["updated"],
        "scorer": env.similarity.kind,
    }
    conflicts = [dict(c, iter=iteration) for r in rewards.values() for c in getattr(r, "conflicts", [])]
    if any(hasattr(r, "conflicts") for r in rewards.values()):
        write_jsonl(store.phase_dir(iteration) / "teacher_conflicts.jsonl", conflicts)
        summary["teacher_conflicts"] = len(conflicts)
    store.replace_samples(iteration, samples)  # a forced re-score replaces, never duplicates
    record_scores(store, iteration, summary)
    log.info(
        "iter %d: avg reward %.4f, breakdown %s, weights %s -> %s",
        iteration,
        result.avg_reward,
        summary["reward_breakdown"],
        summary["weights"],
        summary["next_weights"],
    )
    return {"path": str(path), "sha256": hash_path(path), "seconds": time.perf_counter() - t0, **summary}


def finalize(store: JobStore, adapter: str) -> str:
    """Copy ``adapter`` (the round the job chose) to ``checkpoints/final`` (atomically)."""
    final = store.checkpoint("final")
    with atomic_dir(final) as tmp:
        for f in Path(adapter).iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    return str(final)
