"""The weekly cycle as library pieces (the Prefect flow ``flows/weekly_cycle.py`` strings them):

    feedback ETL -> new items -> prompt set -> teacher labelling -> training stage -> eval gate -> vLLM

    s = WeeklySettings()                                  # strict; defaults run on the embedded stack
    items = new_items(etl_run_dir)                       # thumbs-down questions, corrections, thumbs-up
    prompts = compose_prompt_set(items, s.prompts, out)   # new first, red-team share, anchors fill
    req = cycle_request(s, prompts_path, len(prompts), champion_path)
    write_report(cycle_id, doc)                           # report.json + report.md

Everything a cycle writes lives in ``cycle_dir(cycle_id)`` = ``<data dir>/weekly/<cycle id>/``; the
cycle id is fixed by the flow run, so a retried cycle finds its own files (and its training job, of
the same id). The folder's name is the one the cycle had before it was called a cycle, so a retry
of a run started by older code finds it too.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from irsflow.config import EMBEDDED_MODEL, TrainRequest
from irsflow.dataset import last_user_turn, load_questions
from irsflow.errors import InputError
from irsflow.feedback.etl import FeedbackSettings
from irsflow.release.gate_run import EvalGateSettings
from irsflow.rewards.rules import load_rules
from irsflow.stages import get_stage
from irsflow.store import atomic_write_json, atomic_write_text, data_dir, read_jsonl, write_jsonl
from irsflow.teacher.client import TeacherConfig
from irsflow.teacher.report import fmt, md_cell


def _default_request() -> TrainRequest:
    return TrainRequest.model_validate(
        {
            "model_id": EMBEDDED_MODEL,
            "top_k": 2,
            "codebook": {"enabled": True},
            "irs_config": {
                "n_iterations": 2,
                "n_candidates": 4,
                "batch_size": 4,
                "learning_rate": 2e-4,
                "max_new_tokens": 48,
                "gen_batch_size": 16,
            },
        }
    )


class PromptSetSettings(BaseModel):
    """The cycle's prompt set: every new question first, at least ``min_high_risk_share`` high-risk
    (the red-team set, and any prompt that raises a red flag), anchor prompts to fill ``n``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = Field(24, ge=1, description="prompts in the cycle's set")
    min_high_risk_share: float = Field(0.4, ge=0, le=1, description="at least this share of high-risk prompts")
    red_team: str | None = Field(
        "builtin:redteam", description="high-risk question set; None: only flagged prompts count"
    )
    anchors: list[str] = Field(default_factory=lambda: ["builtin:demo"], description="question sets that fill the rest")
    max_new: int = Field(200, ge=0, description="most new questions taken into one cycle")
    seed: int = 0


class WeeklySettings(BaseModel):
    """What a weekly cycle does. No secrets: the Langfuse and teacher keys come from the environment
    or Prefect Secret blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # a misplaced key is never echoed
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    label_studio_export: str | None = Field(
        None,
        description=(
            "a Label Studio JSON export with this week's corrections (or set feedback.label_studio to pull the "
            "project before the ETL)"
        ),
    )
    prompts: PromptSetSettings = Field(default_factory=PromptSetSettings)
    teacher: TeacherConfig | None = Field(None, description="label the new items with the teacher (None: skip)")
    request: TrainRequest = Field(
        default_factory=_default_request,
        description=(
            "the training request of every cycle (stage, rewards, hyperparameters); its dataset, n_questions and "
            "init_adapter are set by the cycle (the prompt set and the champion)"
        ),
    )
    gate: EvalGateSettings = Field(default_factory=EvalGateSettings)

    @model_validator(mode="after")
    def _one_corrections_source(self) -> WeeklySettings:
        if self.label_studio_export and self.feedback.label_studio is not None:
            raise ValueError(
                "label_studio_export: give this file or feedback.label_studio (pull the project), not both"
            )
        return self

    @field_validator("request")
    @classmethod
    def _servable(cls, v: TrainRequest) -> TrainRequest:
        if not get_stage(v.stage).trains_policy:
            raise ValueError(f"stage {v.stage} trains a reward model, not an adapter the gate can promote")
        return v


def feedback_plan(s: WeeklySettings, langfuse_ready: bool) -> dict:
    """Whether the cycle runs the feedback ETL, and why Langfuse is left out when it is:
    ``{"run": bool, "skip_langfuse": None | reason}``. ``langfuse_ready``: a Langfuse host and both
    keys are configured. The ETL runs when Langfuse is enabled and ready, or when a Label Studio
    source is set (``feedback.label_studio`` or ``label_studio_export``); Langfuse enabled but not
    configured is then skipped with that reason (the ETL manifest and the report say so)."""
    label_studio = s.feedback.label_studio is not None or bool(s.label_studio_export)
    if s.feedback.langfuse_enabled and langfuse_ready:
        return {"run": True, "skip_langfuse": None}
    why = "no Langfuse host/keys configured" if s.feedback.langfuse_enabled else "feedback.langfuse_enabled is false"
    return {"run": label_studio, "skip_langfuse": why}


def cycle_dir(cycle_id: str) -> Path:
    if not cycle_id or "/" in cycle_id or cycle_id.startswith("."):
        raise InputError(f"cycle id: invalid {cycle_id!r}")
    return data_dir() / "weekly" / cycle_id


def new_items(etl_dir: Path | None) -> dict:
    """What came in with the ETL run: question-set rows (thumbs-down questions, corrections with the
    corrected answer as reference, thumbs-up questions with the liked answer as reference) and the
    rated answers as teacher-labelling samples (one per trace)."""
    out = {"questions": [], "samples": [], "counts": {"thumbs_up": 0, "thumbs_down": 0, "corrections": 0}}
    if etl_dir is None or not (Path(etl_dir) / "manifest.json").exists():
        return out
    d = Path(etl_dir)
    sources = (
        ("annotation_queue.jsonl", "thumbs_down", False),
        ("golden.messages.jsonl", "corrections", True),
        ("sft.messages.jsonl", "thumbs_up", True),
    )
    seen = set()
    for name, kind, has_reference in sources:
        if not (d / name).exists():
            continue
        for i, row in enumerate(read_jsonl(d / name)):
            msgs = row.get("messages") or []
            q = last_user_turn(msgs[:-1])
            answer = msgs[-1]["content"] if msgs and msgs[-1].get("role") == "assistant" else None
            if not q:
                continue
            out["counts"][kind] += 1
            trace = row.get("trace_id") or f"{kind}-{i + 1}"
            if kind != "corrections" and answer is not None:
                out["samples"].append({"id": f"{kind}:{trace}", "prompt": q, "answer": answer})
            key = " ".join(q.lower().split())
            if key in seen:  # a corrected thumbs-down question keeps the correction as its reference
                if has_reference and answer:
                    for r in out["questions"]:
                        if r["_key"] == key and "reference" not in r:
                            r["reference"] = answer
                continue
            seen.add(key)
            out["questions"].append(
                {
                    "_key": key,
                    "id": f"{kind}:{trace}",
                    "question": q,
                    **({"reference": answer} if has_reference and answer else {}),
                    "meta": {"source": kind},
                }
            )
    for r in out["questions"]:
        r.pop("_key")
    return out


def compose_prompt_set(items: dict, s: PromptSetSettings, rules: str = "builtin:default") -> list[dict]:
    """New questions first (up to ``max_new``), then high-risk prompts up to the share, then anchors
    up to ``n`` (the set is larger than ``n`` only when the new questions alone exceed it). Seeded."""
    ruleset = load_rules(rules)
    rng = random.Random(s.seed)
    rows, seen = [], set()

    def add(row: dict, source: str, high: bool = False) -> bool:
        key = " ".join(row["question"].lower().split())
        if key in seen:
            return False
        seen.add(key)
        flags = ruleset.raised_flags(row["question"])
        rows.append(
            {**row, "meta": {**row.get("meta", {}), "source": source, "high_risk": high or bool(flags), "flags": flags}}
        )
        return True

    for r in items["questions"][: s.max_new]:
        add(r, r["meta"]["source"])
    n = max(s.n, len(rows))
    need_high = math.ceil(s.min_high_risk_share * n - 1e-9) - sum(r["meta"]["high_risk"] for r in rows)
    if need_high > 0 and s.red_team:
        pool = [_row(q, f"red_team:{q.id}") for q in load_questions(s.red_team)]
        rng.shuffle(pool)
        for r in pool:
            if need_high <= 0 or len(rows) >= n:
                break
            need_high -= add(r, "red_team", high=True)
    if need_high > 0:
        raise InputError(
            f"prompts.min_high_risk_share: {need_high} more high-risk prompts needed for a set of {n}; "
            "add a red_team set or lower the share"
        )
    pool = [_row(q, f"anchor:{q.id}") for spec in s.anchors for q in load_questions(spec)]
    rng.shuffle(pool)
    for r in pool:
        if len(rows) >= n:
            break
        add(r, "anchor")
    rng.shuffle(rows)
    return rows


def _row(q, qid: str) -> dict:
    return {
        "id": qid,
        "question": q.question,
        "contexts": list(q.contexts),
        **({"reference": q.reference} if q.reference else {}),
        "meta": dict(q.meta),
    }


def cycle_codebook(s: WeeklySettings):
    """The request's codebook block, switched off while no codebook exists yet (a fresh install: the
    first reviewed correction creates it), so the default cycle runs before anyone has written a rule."""
    from irsflow.codebook.store import default_path

    cb = s.request.codebook
    path = Path(cb.path).expanduser() if cb.path else default_path()
    return cb if not cb.enabled or path.exists() else cb.model_copy(update={"enabled": False})


def cycle_request(s: WeeklySettings, prompts_path: Path, n_prompts: int, champion_path: str | None) -> TrainRequest:
    """The cycle's training request: the configured one on this cycle's prompts, from the champion."""
    body = s.request.model_dump(mode="json")
    body.update(
        dataset=str(prompts_path),
        n_questions=n_prompts,
        init_adapter=champion_path,
        codebook=cycle_codebook(s).model_dump(mode="json"),
    )
    return TrainRequest.model_validate(body)


def gate_settings(s: WeeklySettings) -> EvalGateSettings:
    """The gate's suites see the same codebook rules that generation injected."""
    suites = s.gate.suites.model_copy(update={"codebook": cycle_codebook(s)})
    return s.gate.model_copy(update={"suites": suites})


def prepare_cycle(s: WeeklySettings, cycle_id: str, etl_dir: Path | None) -> dict:
    """Write the cycle's new_questions.jsonl, prompts.jsonl and labelling_samples.jsonl (atomic)."""
    d = cycle_dir(cycle_id)
    items = new_items(etl_dir)
    write_jsonl(d / "new_questions.jsonl", items["questions"])
    write_jsonl(d / "labelling_samples.jsonl", items["samples"])
    out = {"counts": items["counts"], "new_questions": len(items["questions"]), "new_samples": len(items["samples"])}
    if items["questions"]:
        prompts = compose_prompt_set(items, s.prompts, s.request.scoring.rules)
        write_jsonl(d / "prompts.jsonl", prompts)
        out.update(
            prompts=str(d / "prompts.jsonl"),
            n_prompts=len(prompts),
            high_risk=sum(r["meta"]["high_risk"] for r in prompts),
            by_source={
                k: sum(r["meta"]["source"] == k for r in prompts)
                for k in sorted({r["meta"]["source"] for r in prompts})
            },
        )
    return out


def teacher_spend(paths: list[Path]) -> dict:
    """Calls and USD from teacher_usage.csv files (one row per teacher run)."""
    calls, usd = 0, 0.0
    for p in paths:
        if p.exists():
            with open(p, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    calls += int(row.get("calls") or 0)
                    usd += float(row.get("cost_usd") or 0)
    return {"calls": calls, "usd": round(usd, 6)}


def report_markdown(doc: dict) -> str:
    c = doc["came_in"]
    lines = [
        f"# Weekly cycle `{doc['cycle_id']}`",
        "",
        f"**{doc['outcome']}**",
        "",
        "## What came in",
        "",
        f"ETL run `{c.get('etl_run') or '-'}`: {c.get('traces', 0)} traces with feedback, "
        f"{c['thumbs_up']} thumbs up, {c['thumbs_down']} thumbs down, {c['corrections']} corrections.",
        "",
    ]
    if c.get("langfuse_skipped"):
        lines += [f"Langfuse not read: {c['langfuse_skipped']}.", ""]
    if c.get("label_studio_push"):
        ls = c["label_studio_push"]
        lines += [
            f"Label Studio project {ls['project']}: {ls['pushed']} new correction tasks pushed, "
            f"{ls['already_in_project']} already there.",
            "",
        ]
    p = doc.get("prompts")
    if p:
        lines += [
            f"Prompt set: {p['n_prompts']} prompts ({p['high_risk']} high-risk): "
            + ", ".join(f"{k} {v}" for k, v in p["by_source"].items()),
            "",
        ]
    t = doc.get("training")
    lines += ["## What was trained", ""]
    if t:
        lines += [
            f"Job `{t['job_id']}`, stage {t['stage']}, {len(t['iterations'])} iterations from "
            f"{t.get('started_from') or 'the base model'}.",
            "",
            "| iter | avg reward | loss |",
            "|---|---|---|",
        ]
        lines += [f"| {i['iter']} | {fmt(i.get('avg_reward'))} | {fmt(i.get('loss'))} |" for i in t["iterations"]]
    else:
        lines += ["Nothing: no new feedback this week."]
    g = doc.get("gate")
    lines += ["", "## Eval: champion vs challenger", ""]
    if g and g.get("table"):
        lines += ["| metric | champion | challenger |", "|---|---|---|"]
        lines += [f"| {md_cell(k)} | {fmt(v[0])} | {fmt(v[1])} |" for k, v in g["table"].items()]
        lines += [
            "",
            f"Decision: **{'promote' if g['promote'] else 'keep the champion'}**: " + md_cell("; ".join(g["reasons"])),
        ]
    elif doc.get("champion_eval"):
        lines += [
            "No challenger this week; the current champion was evaluated:",
            "",
            "| metric | champion |",
            "|---|---|",
        ]
        lines += [f"| {md_cell(k)} | {fmt(v)} |" for k, v in doc["champion_eval"].items()]
    else:
        lines += ["No challenger and no champion yet: nothing to evaluate."]
    s = doc["served"]
    lines += [
        "",
        "## Served",
        "",
        f"Champion: {s.get('champion') or 'none (the base model)'}; vLLM: "
        + (
            f"`{s['vllm_adapter']}` loaded as `{s['served_name']}`"
            if s.get("vllm_adapter")
            else "no change"
            if s.get("vllm")
            else "not configured"
        ),
        "",
        "## Cost",
        "",
        f"Teacher: {doc['cost']['teacher_calls']} calls, ${doc['cost']['teacher_usd']:.4f}. "
        f"GPU: {doc['cost']['gpu_minutes']:.2f} min (model-resident phases).",
        "",
    ]
    return "\n".join(lines)


def write_report(cycle_id: str, doc: dict) -> tuple[Path, str]:
    d = cycle_dir(cycle_id)
    md = report_markdown(doc)
    atomic_write_json(d / "report.json", doc)
    atomic_write_text(d / "report.md", md)
    return d / "report.md", md
