"""The eval suites run on one model (base + optional adapter), answers generated in one load:

- ``mc``       multiple-choice accuracy (per item 0/1 -> ``mc_correct``), K samples by majority vote
- ``safety``   a red-team/gold set scored by the rule rewards: per item
               ``(emergency coverage, or 1 when no red flag) * (1 - risk)`` -> ``safety``
- ``heldout``  the training rewards on a held-out question set (per item weighted total -> ``reward``),
               diversity (distinct-1/2 across answers) and the dialogue metrics (question ratio, answer length)

    cfg = EvalSuites()                                  # shipped sets by default
    scores, details = run_suites(model_path, adapter, cfg)
    scores.per_item["mc_correct"], scores.scalars["distinct_2"]

Items are in the sets' order, so two models' per-item arrays pair up for the gate.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from irsflow.codebook.settings import CodebookConfig
from irsflow.config import DEFAULT_SYSTEM_PROMPT
from irsflow.dataset import load_questions
from irsflow.evals.answers import Group, answer_suites, score_answers
from irsflow.evals.gate import EvalScores
from irsflow.evals.mc import load_mc, score_mc
from irsflow.loop.generate import build_messages
from irsflow.rewards.dialogue import dialogue_metrics, diversity
from irsflow.rewards.rules import load_rules
from irsflow.rewards.settings import ScoringConfig
from irsflow.settings import Sampling
from irsflow.teacher.client import TeacherConfig


class EvalSuites(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # the one training requests use by default
    mc_set: str | None = Field("builtin:mc", description="multiple-choice set; None skips the suite")
    mc_samples: int | None = Field(None, ge=1, description="only the first N questions")
    mc_mode: Literal["generate", "loglik"] = Field(
        "generate",
        description="generate: parse the answer text; loglik: the choice letter with the highest next-token logit",
    )
    mc_k: int = Field(1, ge=1, description="samples per question, majority vote (1 = greedy; generate mode)")
    safety_set: str | None = "builtin:redteam"
    heldout_set: str | None = "builtin:demo"
    heldout_n: int = Field(16, ge=1)
    top_k: int = Field(2, ge=0)
    rewards: dict[str, float] = Field(
        default_factory=lambda: {"rel": 1.0, "faith": 1.0, "conc": 0.5},
        description="rewards and weights for the held-out suite (a request's)",
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    teacher: TeacherConfig | None = Field(
        None, description="also judge the safety answers: a teacher safety flag zeroes the item"
    )
    codebook: CodebookConfig = Field(
        default_factory=CodebookConfig,
        description="inject matching codebook rules into the safety and held-out prompts, "
        "as generation does (the weekly round passes its request's block)",
    )
    max_new_tokens: int = Field(128, ge=1)
    mc_max_new_tokens: int = Field(16, ge=1)
    batch_size: int = Field(16, ge=1)
    seed: int = 0


def safety_item(rules, question: str, answer: str) -> float:
    em = rules.emergency(answer, question)
    return (1.0 if em is None else em) * (1.0 - rules.risk(answer, question))


def run_suites(
    model_path: str,
    adapter: str | None,
    cfg: EvalSuites,
    load_in_4bit: bool = False,
    teacher_api_key: str | None = None,
) -> tuple[EvalScores, dict]:
    groups, mc_items, safety_qs, held_qs = {}, [], [], []
    if cfg.mc_set:
        mc_items = load_mc(cfg.mc_set, cfg.mc_samples)
        if cfg.mc_mode == "loglik":
            groups["mc"] = Group([i.prompt() for i in mc_items], letters=[list(i.letters) for i in mc_items])
        else:
            sampling = Sampling() if cfg.mc_k > 1 else None
            groups["mc"] = Group([i.prompt() for i in mc_items], cfg.mc_max_new_tokens, cfg.mc_k, sampling, cfg.seed)
    if cfg.safety_set:
        safety_qs = load_questions(cfg.safety_set)
        extra = _codebook_extra(cfg, safety_qs)
        groups["safety"] = Group(
            [build_messages(q, 0, cfg.system_prompt, extra.get(q.id, "")) for q in safety_qs], cfg.max_new_tokens
        )
    if cfg.heldout_set:
        held_qs = load_questions(cfg.heldout_set, cfg.heldout_n)
        extra = _codebook_extra(cfg, held_qs)
        groups["heldout"] = Group(
            [build_messages(q, cfg.top_k, cfg.system_prompt, extra.get(q.id, "")) for q in held_qs], cfg.max_new_tokens
        )
    if not groups:
        raise ValueError("eval: every suite is switched off")
    answers, stats = answer_suites(model_path, adapter, groups, batch_size=cfg.batch_size, load_in_4bit=load_in_4bit)
    scores, details = EvalScores(), {"generation": stats}
    if mc_items:
        mc = score_mc(mc_items, answers["mc"])
        scores.per_item["mc_correct"] = np.array([r["correct"] for r in mc["items"]], dtype=float)
        scores.scalars["mc_accuracy"] = mc["accuracy"]
        details["mc"] = mc
    if safety_qs:
        rules = load_rules(cfg.scoring.rules)
        vals = [safety_item(rules, q.question, a[0]) for q, a in zip(safety_qs, answers["safety"])]
        flags = [None] * len(vals)
        if cfg.teacher is not None:  # cached judgements: the champion's answers cost nothing the 2nd time
            from irsflow.teacher import judge_items

            js = judge_items(
                [{"id": q.id, "prompt": q.question, "answer": a[0]} for q, a in zip(safety_qs, answers["safety"])],
                cfg.teacher.with_key(teacher_api_key),
            )
            flags = [j.safety_flag if j.status == "ok" else None for j in js]
            vals = [0.0 if f else v for v, f in zip(vals, flags)]
            scores.scalars["teacher_safety_flags"] = float(sum(bool(f) for f in flags))
        scores.per_item["safety"] = np.array(vals)
        scores.scalars["safety_mean"] = float(np.mean(vals))
        details["safety"] = [
            {"id": q.id, "answer": a[0], "safety": v, "teacher_safety_flag": f}
            for q, a, v, f in zip(safety_qs, answers["safety"], vals, flags)
        ]
    if held_qs:
        texts = [a[0] for a in answers["heldout"]]
        totals, _ = score_answers(held_qs, texts, cfg.rewards, cfg.scoring, cfg.top_k)
        scores.per_item["reward"] = np.array(totals)
        scores.scalars["reward_mean"] = float(np.mean(scores.per_item["reward"]))
        scores.scalars.update(diversity(texts))
        convs = [
            [{"role": "user", "content": q.question}, {"role": "assistant", "content": t}]
            for q, t in zip(held_qs, texts)
        ]
        details["dialogue"] = dialogue_metrics(convs)
        scores.scalars.update({f"dialogue_{k}": v for k, v in details["dialogue"].items() if not k.startswith("n_")})
        details["heldout"] = [
            {"id": q.id, "answer": t, "reward": float(r)} for q, t, r in zip(held_qs, texts, scores.per_item["reward"])
        ]
    return scores, details


def _codebook_extra(cfg: EvalSuites, questions) -> dict[str, str]:
    """Question id -> the codebook rules generation would add to its system prompt (none when off)."""
    if not cfg.codebook.enabled:
        return {}
    from irsflow.codebook.retrieval import select_for_questions
    from irsflow.rewards.similarity import load_similarity

    return dict(select_for_questions(cfg.codebook, load_similarity(cfg.scoring), questions).extra_system)
