"""Teacher labelling (seed 001 RLAIF): rule rewards + teacher judgement + fusion for a set of
answers, with conflicts set aside for expert review.

    items = items_from_job(open_job("20261122-abc"))      # every iteration's chosen answers
    items = load_items("answers.jsonl")         # or {"id", "prompt"|"question", "answer"|"chosen", "context"?}
    summary = label_items(items, scoring, teacher_settings, out_dir)

``out_dir`` receives (each file written atomically):
  teacher_labels.jsonl     one row per item: rule scores (chain, emergency, risk + which red flags and
                           risk patterns fired), teacher score/flag/comment/best answer and status,
                           rules_score, the fused ``rlaif`` reward, conflict
  teacher_conflicts.jsonl  items where |teacher - rules| > scoring.fusion.conflict_threshold
  teacher_judgements.jsonl one line per judged item, under the item's own id, in the seed's form, with
                           its status: ok, or the failure it was (truncated, schema_mismatch, ...)
  teacher_usage.csv        the ledger, one row per run (calls, tokens, cache hits, cost)
  labelling.json           what produced them (teacher config without the key, rules, fusion, counts)
  inspect_report.md/.csv   the inspection report (report.py)

A rerun over the same items makes zero API calls (the cache): verdicts and unusable replies
(truncated, schema mismatch, copied example...) are cached and reported again as what they were;
items with no reply (endpoint down, blank) are asked again. A failed item never gets a score.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from irsflow.dataset import jsonl_objects
from irsflow.errors import InputError
from irsflow.rewards import RewardBatch, RewardEnv
from irsflow.rewards.fusion import FUSED, FusedReward
from irsflow.rewards.rules import load_rules
from irsflow.rewards.settings import ScoringConfig
from irsflow.store import JobStore, atomic_write_json, utc_now, write_jsonl
from irsflow.teacher.cache import JudgementCache, judgement_line
from irsflow.teacher.client import TeacherConfig, TeacherSettings
from irsflow.teacher.replies import FAILURES, STATUSES
from irsflow.teacher.report import write_report

log = logging.getLogger("irsflow.teacher")
_NEEDS_SIMILARITY = {"rel", "faith", "ref"}


def load_items(path: str | Path) -> list[dict]:
    """A samples file: JSONL rows with ``id``, ``prompt`` (or ``question``), ``answer`` (or
    ``chosen``) and optional ``context`` (or ``contexts``, joined). Errors name file and line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"samples: no file {p}")
    items, seen = [], set()
    for where, n, row in jsonl_objects(p.read_text(encoding="utf-8"), str(p), InputError):
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object")
        prompt, answer = row.get("prompt", row.get("question")), row.get("answer", row.get("chosen"))
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{where}: needs a non-empty string 'prompt' (or 'question')")
        if not isinstance(answer, str):
            raise InputError(f"{where}: needs a string 'answer' (or 'chosen')")
        context = row.get("context")
        if context is None and isinstance(row.get("contexts"), list):
            context = "\n\n".join(str(c) for c in row["contexts"])
        if context is not None and not isinstance(context, str):
            raise InputError(f"{where}: 'context' must be a string")
        item_id = str(row.get("id") or f"line-{n}")
        if "iter" in row:
            item_id = f"{row['iter']}:{item_id}"
        if item_id in seen:
            raise InputError(f"{where}: duplicate id {item_id!r}")
        seen.add(item_id)
        items.append(
            {
                "id": item_id,
                "prompt": prompt,
                "answer": answer,
                "context": context or "",
                **({"iter": row["iter"]} if "iter" in row else {}),
            }
        )
    if not items:
        raise InputError(f"{p}: no samples")
    return items


def items_from_job(store: JobStore, iterations: list[int] | None = None) -> list[dict]:
    """The chosen answer of every question of every (or the given) iteration, with the prompt's
    context joined from that iteration's candidates file."""
    items = [
        {
            "id": f"{it}:{s['id']}",
            "iter": it,
            "prompt": s["question"],
            "answer": s["chosen"],
            "context": row.get("context") or "",
        }
        for it, s, row in store.samples_with_candidates(iterations)
    ]
    if not items and not (store.samples_path.exists() and store.samples_path.stat().st_size):
        raise InputError(f"job {store.job_id}: no samples.jsonl rows yet (has an iteration finished scoring?)")
    if not items:
        raise InputError(f"job {store.job_id}: no samples for iterations {iterations}")
    return items


def compute_labels(
    items: list[dict],
    scoring: ScoringConfig,
    teacher: TeacherSettings | TeacherConfig | None,
    cache_only: bool = False,
    usage_path: Path | None = None,
) -> tuple[list[dict], list[dict]]:
    """(rows, conflicts) for ``items``; ``cache_only`` reads known judgements and calls nothing."""
    rules = load_rules(scoring.rules)
    env = RewardEnv(
        settings=scoring,
        extras={
            "teacher": teacher,
            "teacher_cache_only": cache_only,
            "teacher_usage_path": usage_path,
            "teacher_allow_failures": True,
        },
    )  # a report records them
    if _NEEDS_SIMILARITY & set(scoring.fusion.weights):
        from irsflow.rewards.similarity import load_similarity

        env.similarity = load_similarity(scoring)
    fused = FusedReward(env)
    batch = RewardBatch(
        questions=[i["prompt"] for i in items],
        answers=[i["answer"] for i in items],
        contexts=[i.get("context") or "" for i in items],
        meta=[{"id": i["id"]} for i in items],
    )
    fused(batch)
    judgements = getattr(fused.parts.get("teacher"), "last", None) or [None] * len(items)
    rows = []
    for item, terms, j in zip(items, fused.terms, judgements):
        q, a, c = item["prompt"], item["answer"], item.get("context") or ""
        hits = rules.risk_hits(a, q, c)
        # the fusion already scored the rule terms it uses; the report always shows all three
        rule_terms = {
            k: terms[k] if k in terms else score()
            for k, score in (
                ("chain", lambda a=a: rules.chain_score(a)),
                ("emergency", lambda a=a, q=q: rules.emergency(a, q)),
                ("risk", lambda hits=hits: rules.risk_of(hits)),
            )
        }
        rows.append(
            {
                "id": item["id"],
                **({"iter": item["iter"]} if "iter" in item else {}),
                "prompt": q,
                "answer": a,
                "context": c,
                **rule_terms,
                "raised_flags": rules.raised_flags(q),
                "risk_hits": hits,
                **{k: v for k, v in terms.items() if k not in ("rules_score", FUSED, "conflict")},
                "teacher_status": j.status if j else "not_configured",
                "teacher_score": j.teacher_score if j else None,
                "safety_flag": j.safety_flag if j else None,
                "comment": j.comment if j else None,
                "best_answer": j.best_answer if j else None,
                "teacher_error": j.error if j else None,
                "teacher_key": j.key if j else None,
                "rules_score": terms["rules_score"],
                FUSED: terms[FUSED],
                "conflict": terms["conflict"],
            }
        )
    conflicts = [
        {
            "id": r["id"],
            **{
                k: r[k]
                for k in (
                    "prompt",
                    "answer",
                    "teacher_score",
                    "rules_score",
                    "chain",
                    "emergency",
                    "risk",
                    "risk_hits",
                    "safety_flag",
                    "comment",
                    "best_answer",
                )
            },
            "gap": round(abs(r["teacher_score"] - r["rules_score"]), 6),
        }
        for r in rows
        if r["conflict"]
    ]
    return rows, conflicts


def label_items(
    items: list[dict],
    scoring: ScoringConfig,
    teacher: TeacherSettings,
    out_dir: Path,
    source: str = "",
    title: str = "Teacher labelling",
) -> dict:
    """Judge, fuse and write every output file into ``out_dir``; returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, conflicts = compute_labels(items, scoring, teacher, usage_path=out_dir / "teacher_usage.csv")
    write_jsonl(out_dir / "teacher_labels.jsonl", rows)
    write_jsonl(out_dir / "teacher_conflicts.jsonl", conflicts)
    cache = JudgementCache(teacher.resolved_cache_path())
    try:  # one line per item, under the item's own id (the cache keeps the first id a content had)
        lines = []
        for r in rows:
            hit = cache.get(r["teacher_key"]) if r["teacher_key"] else None
            if hit is not None and hit["status"] == r["teacher_status"]:
                lines.append(judgement_line(hit, r["id"]))
            elif r["teacher_status"] in FAILURES:  # no reply to keep (endpoint down, blank)
                lines.append(
                    {
                        "id": r["id"],
                        "status": r["teacher_status"],
                        "prompt": r["prompt"],
                        "answer": r["answer"],
                        "context": r["context"],
                        "teacher_score": None,
                        "error": r["teacher_error"],
                        "model": teacher.model,
                        "template_version": teacher.template_version,
                        "key": r["teacher_key"],
                    }
                )
        write_jsonl(out_dir / "teacher_judgements.jsonl", lines)
    finally:
        cache.close()
    summary = summarize(rows, conflicts)
    atomic_write_json(
        out_dir / "labelling.json",
        {
            "created_at": utc_now(),
            "source": source,
            "teacher": teacher.model_dump(mode="json"),
            "rules": scoring.rules,
            "rules_version": load_rules(scoring.rules).version,
            "fusion": scoring.fusion.model_dump(),
            "summary": summary,
        },
    )
    summary["report_markdown"] = write_report(rows, out_dir, title=title, summary=summary)
    log.info(
        "teacher labelling: %d items, %d ok, %d failed, %d budget-stopped, %d conflicts -> %s",
        summary["items"],
        summary["teacher_ok"],
        summary["teacher_failed"],
        summary["teacher_budget_stopped"],
        summary["conflicts"],
        out_dir,
    )
    return summary


def summarize(rows: list[dict], conflicts: list[dict]) -> dict:
    def mean(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    status = [r["teacher_status"] for r in rows]
    return {
        "items": len(rows),
        "teacher_ok": status.count("ok"),
        "teacher_failed": sum(status.count(s) for s in FAILURES),
        "teacher_statuses": {s: status.count(s) for s in STATUSES if status.count(s)},
        "teacher_budget_stopped": status.count("budget_stopped"),
        "teacher_missing": status.count("missing"),
        "safety_flags": sum(1 for r in rows if r.get("safety_flag")),
        "conflicts": len(conflicts),
        "mean_teacher_score": mean("teacher_score"),
        "mean_rules_score": mean("rules_score"),
        "mean_rlaif": mean(FUSED),
        "mean_chain": mean("chain"),
        "mean_emergency": mean("emergency"),
        "mean_risk": mean("risk"),
    }


def inspect_job(store: JobStore, scoring: ScoringConfig | None = None, teacher: TeacherConfig | None = None) -> dict:
    """The inspection report of a job's samples from what is already known: rule scores computed
    now, teacher judgements read from the cache (no API call, no key). The teacher config is the
    last labelling run's (``teacher/labelling.json``), else the job request's, else the default."""
    from irsflow.config import TrainRequest, stored_request

    req = TrainRequest.model_validate(stored_request(store.read_config()["request"]))
    scoring = scoring or req.scoring
    out_dir = store.dir / "teacher"
    if teacher is None:
        meta = out_dir / "labelling.json"
        if meta.exists():
            teacher = TeacherConfig.model_validate(json.loads(meta.read_text(encoding="utf-8"))["teacher"])
        else:
            teacher = req.teacher or TeacherConfig()
    rows, conflicts = compute_labels(items_from_job(store), scoring, teacher, cache_only=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, conflicts)
    summary["report_markdown"] = write_report(rows, out_dir, title=f"Inspection of job {store.job_id}", summary=summary)
    summary["report_md"], summary["report_csv"] = (
        str(out_dir / "inspect_report.md"),
        str(out_dir / "inspect_report.csv"),
    )
    return summary
