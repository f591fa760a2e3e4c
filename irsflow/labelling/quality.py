"""Seed 001 section 3.1: the teacher checks the data, and RL prompt sets keep a red-team share.

Quality check: the teacher (and the rules) judge the *reference answers* of gold and red-team
sets; references the teacher flags (``safety_flag``, or a score under ``score_floor``) or that
trip a rule (a risk pattern, a red flag not pointed to urgent care) are reported for repair:

    summary = quality_check({"gold": "builtin:gold", "red_team": "builtin:redteam"}, scoring, teacher, out_dir)

Prompt-set builder: sample RL prompts from several question sets with at least
``min_high_risk_share`` (seed: 40%) red-team/high-risk prompts. A prompt is high-risk when its
source is marked so, or when it raises one of the rules' red flags:

    rows = build_prompt_set([PromptSource("builtin:demo"), PromptSource("builtin:redteam", high_risk=True)],
                            n=20, min_high_risk_share=0.4, seed=0, out=Path("training_prompts.jsonl"))
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from irsflow.dataset import load_questions
from irsflow.errors import InputError
from irsflow.labelling.labelling import compute_labels, summarize
from irsflow.rewards.rules import load_rules
from irsflow.rewards.settings import ScoringConfig
from irsflow.store import atomic_write_json, atomic_write_text, utc_now, write_jsonl
from irsflow.teacher.client import TeacherSettings
from irsflow.teacher.report import fmt, md_cell


def quality_check(
    sets: dict[str, str], scoring: ScoringConfig, teacher: TeacherSettings, out_dir: Path, score_floor: float = 0.6
) -> dict:
    """Judge every reference answer of ``sets`` (name -> question set); write ``qc_labels.jsonl``,
    ``qc_flagged.jsonl`` and ``qc_report.md`` into ``out_dir``; return the summary."""
    if not 0 <= score_floor <= 1:
        raise InputError(f"score_floor: must be in [0, 1], got {score_floor}")
    items, skipped = [], 0
    for name, spec in sets.items():
        for q in load_questions(spec):
            if not q.reference:
                skipped += 1
                continue
            items.append(
                {
                    "id": f"{name}:{q.id}",
                    "prompt": q.question,
                    "answer": q.reference,
                    "context": "\n\n".join(q.contexts),
                    "set": name,
                }
            )
    if not items:
        raise InputError(f"quality check: no reference answers in {', '.join(sets.values())}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # references are final answers, not reasoning traces: the chain-of-thought term does not apply
    weights = {k: v for k, v in scoring.fusion.weights.items() if k != "chain"}
    if any(v > 0 for v in weights.values()):
        scoring = scoring.model_copy(update={"fusion": scoring.fusion.model_copy(update={"weights": weights})})
    rows, conflicts = compute_labels(items, scoring, teacher, usage_path=out_dir / "teacher_usage.csv")
    flagged = []
    for item, r in zip(items, rows):
        r["set"] = item["set"]
        reasons = []
        if r["teacher_status"] == "ok":
            if r["safety_flag"]:
                reasons.append("teacher: safety flag")
            if r["teacher_score"] < score_floor:
                reasons.append(f"teacher: score {r['teacher_score']:.2f} < {score_floor}")
        if r["risk_hits"]:
            reasons.append("rules: risk pattern " + ", ".join(r["risk_hits"]))
        if r["emergency"] is not None and r["emergency"] < 1:
            reasons.append("rules: red flag " + ", ".join(r["raised_flags"]) + " without urgent care")
        if reasons:
            flagged.append({**r, "reasons": reasons})
    write_jsonl(out_dir / "qc_labels.jsonl", rows)
    write_jsonl(out_dir / "qc_flagged.jsonl", flagged)
    summary = {
        **summarize(rows, conflicts),
        "sets": dict(sets),
        "skipped_without_reference": skipped,
        "flagged": len(flagged),
        "score_floor": score_floor,
        "created_at": utc_now(),
    }
    atomic_write_json(out_dir / "qc_summary.json", summary)
    atomic_write_text(out_dir / "qc_report.md", qc_markdown(summary, flagged))
    return summary


def qc_markdown(summary: dict, flagged: list[dict]) -> str:
    s = summary
    lines = [
        "# Teacher quality check of reference answers",
        "",
        f"{s['items']} references judged ({', '.join(f'{k}: `{v}`' for k, v in s['sets'].items())}); "
        f"{s['teacher_ok']} judged, {s['teacher_failed']} failed, {s['teacher_budget_stopped']} budget-stopped; "
        f"**{s['flagged']} flagged** (teacher score floor {s['score_floor']}).",
        "",
    ]
    if flagged:
        lines += ["| id | why | teacher | comment | teacher's best answer |", "|---|---|---|---|---|"]
        lines += [
            f"| `{md_cell(r['id'])}` | {md_cell('; '.join(r['reasons']))} | {fmt(r['teacher_score'])} | "
            f"{md_cell(r['comment'])} | {md_cell(r['best_answer'])} |"
            for r in flagged
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PromptSource:
    spec: str  # a question set: file path or builtin:NAME
    high_risk: bool = False
    name: str | None = None  # prefix of the ids; default the spec's stem

    @property
    def label(self) -> str:
        return self.name or Path(self.spec.split(":", 1)[-1]).stem


def build_prompt_set(
    sources: list[PromptSource],
    n: int,
    min_high_risk_share: float = 0.4,
    seed: int = 0,
    rules: str = "builtin:default",
    out: Path | None = None,
) -> list[dict]:
    """``n`` prompts, at least ``ceil(share * n)`` of them high-risk, sampled without replacement
    (seeded), deduplicated by question text; written as a question set (``meta.source``,
    ``meta.high_risk``, ``meta.flags``) to ``out`` if given. Too few prompts -> InputError naming
    the shortfall, before anything is written."""
    if n < 1:
        raise InputError(f"n: must be >= 1, got {n}")
    if not 0 <= min_high_risk_share <= 1:
        raise InputError(f"min_high_risk_share: must be in [0, 1], got {min_high_risk_share}")
    if not sources:
        raise InputError("sources: at least one question set is needed")
    ruleset = load_rules(rules)
    high, normal, seen = [], [], set()
    for src in sources:
        for q in load_questions(src.spec):
            key = " ".join(q.question.lower().split())
            if key in seen:
                continue
            seen.add(key)
            flags = ruleset.raised_flags(q.question)
            row = {
                "id": f"{src.label}:{q.id}",
                "question": q.question,
                "contexts": list(q.contexts),
                **({"reference": q.reference} if q.reference else {}),
                "meta": {**q.meta, "source": src.spec, "high_risk": src.high_risk or bool(flags), "flags": flags},
            }
            (high if row["meta"]["high_risk"] else normal).append(row)
    need_high = math.ceil(min_high_risk_share * n - 1e-9)
    if len(high) < need_high:
        raise InputError(
            f"prompt set: {need_high} high-risk prompts needed ({min_high_risk_share:.0%} of {n}), "
            f"only {len(high)} available; add a red-team set or lower min_high_risk_share"
        )
    if len(high) + len(normal) < n:
        raise InputError(f"prompt set: {n} prompts asked, only {len(high) + len(normal)} distinct available")
    rng = random.Random(seed)
    rng.shuffle(high)
    rng.shuffle(normal)
    n_normal = min(len(normal), n - need_high)
    chosen = high[: n - n_normal] + normal[:n_normal]
    rng.shuffle(chosen)
    if out is not None:
        write_jsonl(Path(out), chosen)
    return chosen
