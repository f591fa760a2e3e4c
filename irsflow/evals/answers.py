"""Answers for evaluation, and their rewards.

One model (base + optional LoRA adapter) loaded once for every suite, prompts batched:

    out, stats = answer_suites(model_path, adapter, {
        "mc": Group(prompts_mc, max_new_tokens=16),
        "heldout": Group(prompts_q, max_new_tokens=128)})
    out["mc"][i]     # n strings for prompt i of that group (greedy when sampling is None; n must be 1)

``batch_size=1`` is the one-at-a-time baseline of the benchmark.

Answer a job's questions with one adapter and score each answer with fixed reward weights (the
held-out evaluation and the round eval of a job; the eval suites score their own answers with
``score_answers``). The rewards never call the teacher: evaluations spend nothing.

    scored = answer_and_score(req, adapter, questions, {"rel": 1.0, "conc": 0.5}, iteration=20_002)
    scored.answers[i], scored.totals[i], scored.means["conc"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from irsflow.dataset import Question
from irsflow.loop.generate import batch_seed, generate_candidates, sample_batch
from irsflow.loop.scoring import score_candidates
from irsflow.models import free_memory, load_model, load_tokenizer, resolve_model
from irsflow.rewards import build_rewards, reward_env
from irsflow.store import ProgressFn, no_progress

if TYPE_CHECKING:
    from irsflow.config import TrainRequest


@dataclass(frozen=True)
class Group:
    prompts: list[list[dict]]
    max_new_tokens: int = 128
    n: int = 1
    sampling: object = None  # irsflow.config.Sampling; None = greedy
    seed: int = 0
    letters: list[str] | None = None  # per prompt: score these next tokens instead of generating


def pick_letters(model, tokenizer, prompts: list[list[dict]], letters: list[str]) -> list[str]:
    """Log-likelihood choice (the lm-eval-harness way): one forward pass over the batch, then per
    prompt the letter whose first token has the highest next-token logit. Never unparsable."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    mask = enc["attention_mask"]
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    with torch.inference_mode():
        logits = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[
            :, -1
        ]
    out = []
    for row, options in zip(logits, letters):
        ids = [tokenizer.encode(L, add_special_tokens=False)[0] for L in options]
        out.append(options[int(torch.argmax(row[ids]))])
    return out


def answer_suites(
    model_path: str,
    adapter: str | None,
    groups: dict[str, Group],
    *,
    batch_size: int = 16,
    load_in_4bit: bool = False,
    progress: ProgressFn = no_progress,
) -> tuple[dict[str, list[list[str]]], dict]:
    for name, g in groups.items():
        if g.sampling is None and g.n != 1:
            raise ValueError(f"eval group {name!r}: greedy decoding gives one answer per prompt: use n=1 or sampling")
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="left")
    model = load_model(model_path, adapter=adapter, load_in_4bit=load_in_4bit)
    model.eval()
    load_s = time.perf_counter() - t0
    out: dict[str, list[list[str]]] = {}
    tokens, done, total = 0, 0, sum(len(g.prompts) for g in groups.values()) or 1
    t1 = time.perf_counter()
    try:
        for name, g in groups.items():
            out[name] = []
            for b, start in enumerate(range(0, len(g.prompts), batch_size)):
                chunk = g.prompts[start : start + batch_size]
                if g.letters is not None:
                    out[name] += [
                        [x] for x in pick_letters(model, tokenizer, chunk, g.letters[start : start + batch_size])
                    ]
                    done += len(chunk)
                    continue
                for cands in sample_batch(
                    model, tokenizer, chunk, g.n, g.max_new_tokens, g.sampling, batch_seed(g.seed, 0, b)
                ):
                    out[name].append([c["text"] for c in cands])
                    tokens += sum(c["n_tokens"] for c in cands)
                done += len(chunk)
                progress(100.0 * done / total)
        answer_s = time.perf_counter() - t1
    finally:
        del model
        free_memory()
    secs = time.perf_counter() - t0
    return out, {
        "seconds": round(secs, 3),
        "load_s": round(load_s, 3),
        "answer_s": round(answer_s, 4),
        "new_tokens": tokens,
        "prompts": total,
        "batch_size": batch_size,
    }


def generate_answers(
    model_path: str,
    adapter: str | None,
    prompts: list[list[dict]],
    *,
    n: int = 1,
    max_new_tokens: int = 128,
    sampling=None,
    seed: int = 0,
    batch_size: int = 16,
    load_in_4bit: bool = False,
    progress: ProgressFn = no_progress,
) -> tuple[list[list[str]], dict]:
    """One group: ``answer_suites`` with a single prompt list."""
    out, stats = answer_suites(
        model_path,
        adapter,
        {"answers": Group(prompts, max_new_tokens, n, sampling, seed)},
        batch_size=batch_size,
        load_in_4bit=load_in_4bit,
        progress=progress,
    )
    return out["answers"], stats


@dataclass(frozen=True)
class ScoredAnswers:
    """One answer per question, in the questions' order, with its rewards under fixed weights."""

    rows: list[dict]  # generation's rows: id, question, context, reference, prompt, candidates, sampling
    answers: list[str]
    totals: list[float] | None  # each answer's weighted reward total; None when no weights were given
    means: dict[str, float | None]  # each reward's mean over the answers (None: every answer abstained)
    weights: dict[str, float]
    seconds: float  # generation, model load included

    @property
    def rewards(self) -> list[float]:
        """Each answer's total over the sum of the weights: rewards in [0, 1] give a reward in [0, 1]."""
        wsum = sum(self.weights.values()) or 1.0
        return [t / wsum for t in self.totals or []]


def score_answers(
    questions: Sequence[Question], answers: Sequence[str], weights: Mapping[str, float], scoring, top_k: int
) -> tuple[list[float], dict[str, float | None]]:
    """Score one answer per question with the rewards ``weights`` names, under ``scoring``
    (``irsflow.rewards.settings.ScoringConfig``), each answer seeing its question's first ``top_k`` contexts.
    Returns each answer's weighted total and each reward's mean. No teacher: nothing is spent."""
    rows = [
        {
            "question": q.question,
            "context": "\n\n".join(q.top_contexts(top_k)),
            "reference": q.reference,
            "candidates": [a],
        }
        for q, a in zip(questions, answers, strict=True)
    ]
    result = score_candidates(rows, build_rewards(list(weights), reward_env(scoring)), dict(weights))
    return [float(t[0]) for t in result.totals], result.means


def answer_and_score(
    req: TrainRequest,
    adapter: str | None,
    questions: list[Question],
    weights: dict[str, float],
    *,
    iteration: int,
    sampling=None,
    progress: ProgressFn = no_progress,
) -> ScoredAnswers:
    """Answer ``questions`` with the request's model and ``adapter`` (None: the model alone), greedily unless
    ``sampling`` is given, as the job generates (its prompts, contexts, batch size, seed; ``iteration``
    keeps the seeds apart from the training rounds'), then score each answer with ``weights``
    (no weights: nothing is scored). ``progress`` covers the generation."""
    cfg = req.shared
    rows, stats = generate_candidates(
        resolve_model(req.model_id),
        adapter,
        questions,
        n_candidates=1,
        max_new_tokens=cfg.max_new_tokens,
        sampling=sampling,
        seed=req.seed,
        iteration=iteration,
        gen_batch_size=cfg.gen_batch_size,
        top_k=req.top_k,
        system_prompt=req.system_prompt,
        load_in_4bit=cfg.load_in_4bit,
        progress=progress,
    )
    answers = [r["candidates"][0]["text"] for r in rows]
    totals, means = score_answers(questions, answers, weights, req.scoring, req.top_k) if weights else (None, {})
    return ScoredAnswers(
        rows=rows, answers=answers, totals=totals, means=means, weights=dict(weights), seconds=stats["seconds"]
    )
