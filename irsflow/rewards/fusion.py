"""The teacher as a reward, and the RLAIF fusion of teacher and rules (seed 001):

- ``teacher`` the teacher LLM's ``teacher_score`` in [0, 1] (see ``irsflow.teacher``); abstains for
              an item the budget stopped, never a made-up score. When more judgements of a batch fail
              than ``teacher.max_failed_share`` allows (default: any), the call raises
              ``TeacherUnavailable`` (retryable) or ``TeacherRepliesUnusable`` with the counts, so the
              scoring phase fails instead of finishing on rules alone; labelling reports set
              ``extras['teacher_allow_failures']`` and record each failure instead. Needs a ``teacher``
              block in the request (the key comes from the environment or a Secret block). Items are
              judged under the batch's own ids (``meta[i]['id']``), else an id derived from the content.
- ``rlaif``   ``R = sum_k w_k * r_k`` over ``scoring.fusion.weights``, by default the seed's
              ``0.35*chain + 0.25*emergency - 0.15*risk + 0.25*teacher``. A term that abstains
              (``emergency`` for a question without red flags, ``teacher`` when not configured or
              failed) drops out and the positive weights present are scaled back to their full sum,
              so an answer is not docked for a check that does not apply to it.

Conflicts: the rules' own verdict, ``rules_score`` = the positive rule terms' weighted mean minus
the penalties (each penalty weight relative to the positive sum), clipped to [0, 1], is compared
with the teacher's score; where they differ by more than ``conflict_threshold`` the item is
recorded in ``reward.conflicts`` (both scores, every term, the teacher's comment and best answer)
for ``teacher_conflicts.jsonl`` and expert review.

    fused = build_rewards(["rlaif"], env)["rlaif"]
    values = fused(batch); fused.conflicts        # list of dicts, appended per call
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from irsflow.rewards import RewardBatch, RewardEnv, build_rewards, register_reward

log = logging.getLogger("irsflow.rewards")
FUSED = "rlaif"


def teacher_settings(env: RewardEnv):
    """The TeacherSettings the caller put into ``env.extras['teacher']`` (None: not configured)."""
    return env.extras.get("teacher")


def item_ids(batch: RewardBatch, settings) -> list[str]:
    """The samples' own ids (``batch.meta[i]['id']``), else ``answer-<key prefix>`` from the
    content; a repeat within the batch gets ``#2``, ``#3``... (the teacher is called once per content)."""
    from irsflow.teacher.client import _key

    ids, seen = [], Counter()
    for q, a, c, m in zip(batch.questions, batch.answers, batch.contexts, batch.meta):
        base = (
            str(m["id"])
            if isinstance(m, dict) and m.get("id") is not None
            else "answer-" + _key(settings, {"prompt": q, "answer": a, "context": c})[:12]
        )
        seen[base] += 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


class TeacherReward:
    name = "teacher"
    penalty = False

    def __init__(self, env: RewardEnv):
        self.env = env
        self.settings = teacher_settings(env)
        self.last: list = []  # the Judgements of the last call, in batch order

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        from irsflow.teacher import cached_judgements, judge_items

        if self.settings is None:
            from irsflow.errors import ConfigError

            raise ConfigError("reward 'teacher' needs a `teacher` block in the request")
        memo = self.env.extras.get("_teacher_batch")
        if memo is not None and memo[0] is batch:  # `teacher` and `rlaif` on the same batch: judge it once
            self.last = memo[1]
            return [j.teacher_score if j.status == "ok" else None for j in self.last]
        items = [
            {"id": i, "prompt": q, "answer": a, "context": c}
            for i, q, a, c in zip(item_ids(batch, self.settings), batch.questions, batch.answers, batch.contexts)
        ]
        if self.env.extras.get("teacher_cache_only"):  # reports: what is known, never a call
            self.last = cached_judgements(items, self.settings)
        else:
            self.last = judge_items(
                items,
                self.settings,
                usage_path=self.env.extras.get("teacher_usage_path"),
                allow_failures=bool(self.env.extras.get("teacher_allow_failures")),
            )
        self.env.extras["_teacher_batch"] = (batch, self.last)
        return [j.teacher_score if j.status == "ok" else None for j in self.last]


@dataclass(frozen=True)
class Fused:
    value: float | None
    rules_score: float | None
    conflict: bool


def fuse(
    terms: dict[str, float | None], weights: dict[str, float], threshold: float, teacher: str = "teacher"
) -> Fused:
    """Combine one item's terms (None = abstained) by ``weights``; see the module docstring."""
    pos_total = sum(w for w in weights.values() if w > 0)
    present = {k: v for k, v in terms.items() if v is not None and k in weights}
    pos_present = sum(weights[k] for k in present if weights[k] > 0)
    if pos_present <= 0:
        return Fused(None, None, False)
    scale = pos_total / pos_present
    value = sum(weights[k] * v * (scale if weights[k] > 0 else 1.0) for k, v in present.items())
    rule_pos = {k: v for k, v in present.items() if k != teacher and weights[k] > 0}
    rules_score = None
    if rule_pos:
        denom = sum(weights[k] for k in rule_pos)
        mean = sum(weights[k] * v for k, v in rule_pos.items()) / denom
        penalty = sum(-weights[k] * v for k, v in present.items() if weights[k] < 0) / pos_total
        rules_score = float(np.clip(mean - penalty, 0.0, 1.0))
    t = present.get(teacher)
    conflict = t is not None and rules_score is not None and abs(t - rules_score) > threshold
    return Fused(float(value), rules_score, conflict)


class FusedReward:
    name = FUSED
    penalty = False

    def __init__(self, env: RewardEnv):
        from irsflow.rewards.settings import FusionConfig

        cfg = getattr(env.settings, "fusion", None) or FusionConfig()
        self.weights, self.threshold = dict(cfg.weights), cfg.conflict_threshold
        names = [n for n in self.weights if n != FUSED]
        if "teacher" in names and teacher_settings(env) is None:
            log.info("rlaif: no teacher configured, fusing the rule terms only")
            names.remove("teacher")
        self.parts = build_rewards(names, env)
        self.conflicts: list[dict] = []
        self.terms: list[dict] = []  # per item of the last call: every term, rules_score, rlaif

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        cols = {n: r(batch) for n, r in self.parts.items()}
        judgements = getattr(self.parts.get("teacher"), "last", None) or [None] * len(batch)
        out, self.terms = [], []
        for i in range(len(batch)):
            terms = {n: cols[n][i] for n in cols}
            f = fuse(terms, self.weights, self.threshold)
            out.append(f.value)
            j = judgements[i]
            self.terms.append({**terms, "rules_score": f.rules_score, FUSED: f.value, "conflict": f.conflict})
            if f.conflict:
                self.conflicts.append(
                    {
                        "prompt": batch.questions[i],
                        "answer": batch.answers[i],
                        "context": batch.contexts[i],
                        "teacher_score": terms.get("teacher"),
                        "rules_score": round(f.rules_score, 6),
                        "gap": round(abs(terms["teacher"] - f.rules_score), 6),
                        "terms": {k: (None if v is None else round(float(v), 6)) for k, v in terms.items()},
                        "safety_flag": getattr(j, "safety_flag", None),
                        "comment": getattr(j, "comment", None),
                        "best_answer": getattr(j, "best_answer", None),
                    }
                )
        return out


for _cls in (TeacherReward, FusedReward):
    register_reward(_cls.name, _cls)
