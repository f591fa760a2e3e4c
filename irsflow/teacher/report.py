"""The inspection report (Markdown + CSV) of labelled samples: per sample the answer, rule scores,
teacher score and comment, conflict, and the teacher's best answer where given.

    md = write_report(rows, out_dir, title="Inspection of job X")   # -> inspect_report.md/.csv

The CSV holds every row in full; the Markdown (also the Prefect artifact) holds the summary,
every conflict and safety flag in full, and a one-line-per-sample table (answers shortened).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from irsflow.store import atomic_write_text

CSV_FIELDS = [
    "id",
    "iter",
    "prompt",
    "answer",
    "chain",
    "emergency",
    "risk",
    "raised_flags",
    "risk_hits",
    "rules_score",
    "teacher_status",
    "teacher_score",
    "safety_flag",
    "comment",
    "best_answer",
    "rlaif",
    "conflict",
    "teacher_error",
]
MAX_TABLE_ROWS = 300  # the artifact stays readable; the CSV has everything


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def md_cell(v, limit: int | None = None) -> str:
    s = fmt(v).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return s if limit is None or len(s) <= limit else s[: limit - 1] + "…"


def _block(label: str, text: str | None) -> list[str]:
    if not text:
        return []
    return [f"**{label}:**", "", *("> " + line for line in str(text).splitlines() or [""]), ""]


def report_markdown(rows: list[dict], title: str, summary: dict) -> str:
    s = summary
    lines = [
        f"# {title}",
        "",
        "| items | teacher ok | failed | budget-stopped | not in cache | safety flags | conflicts |",
        "|---|---|---|---|---|---|---|",
        f"| {s['items']} | {s['teacher_ok']} | {s['teacher_failed']} | {s['teacher_budget_stopped']} | "
        f"{s['teacher_missing']} | {s['safety_flags']} | {s['conflicts']} |",
        "",
        *(
            [
                "Failed judgements, by what they were: "
                + ", ".join(
                    f"{n} {k}" for k, n in s["teacher_statuses"].items() if k not in ("ok", "budget_stopped", "missing")
                ),
                "",
            ]
            if s.get("teacher_failed")
            else []
        ),
        "| mean | chain | emergency | risk | rules | teacher | rlaif |",
        "|---|---|---|---|---|---|---|",
        f"| | {fmt(s['mean_chain'])} | {fmt(s['mean_emergency'])} | {fmt(s['mean_risk'])} | "
        f"{fmt(s['mean_rules_score'])} | {fmt(s['mean_teacher_score'])} | {fmt(s['mean_rlaif'])} |",
        "",
    ]
    review = [r for r in rows if r.get("conflict") or r.get("safety_flag")]
    if review:
        lines += ["## For expert review (conflicts and safety flags)", ""]
        for r in review:
            why = " and ".join(
                w for w, on in (("conflict", r.get("conflict")), ("safety flag", r.get("safety_flag"))) if on
            )
            lines += [
                f"### `{r['id']}`: {why}",
                "",
                f"rules {fmt(r.get('rules_score'))} (chain {fmt(r.get('chain'))}, emergency "
                f"{fmt(r.get('emergency')) or 'n/a'}, risk {fmt(r.get('risk'))}"
                + (f": {fmt(r.get('risk_hits'))}" if r.get("risk_hits") else "")
                + ")"
                f" vs teacher {fmt(r.get('teacher_score'))}",
                "",
            ]
            lines += _block("Question", r["prompt"]) + _block("Answer", r["answer"])
            lines += _block("Teacher", r.get("comment")) + _block("Teacher's best answer", r.get("best_answer"))
    lines += [
        "## Samples",
        "",
        "| id | answer | chain | emerg. | risk | rules | teacher | rlaif | comment | best answer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows[:MAX_TABLE_ROWS]:
        teacher = fmt(r.get("teacher_score")) if r.get("teacher_status") == "ok" else r.get("teacher_status", "")
        lines.append(
            f"| `{md_cell(r['id'])}` | {md_cell(r['answer'], 120)} | {md_cell(r.get('chain'))} | "
            f"{md_cell(r.get('emergency'))} | {md_cell(r.get('risk'))} | {md_cell(r.get('rules_score'))} | "
            f"{md_cell(teacher)} | {md_cell(r.get('rlaif'))} | {md_cell(r.get('comment'), 120)} | "
            f"{md_cell(r.get('best_answer'), 120)} |"
        )
    if len(rows) > MAX_TABLE_ROWS:
        lines += ["", f"{len(rows) - MAX_TABLE_ROWS} more rows in inspect_report.csv."]
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict], out_dir: Path, title: str, summary: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (";".join(r[k]) if isinstance(r.get(k), list) else r.get(k)) for k in CSV_FIELDS})
    md = report_markdown(rows, title, summary)
    atomic_write_text(Path(out_dir) / "inspect_report.csv", buf.getvalue())
    atomic_write_text(Path(out_dir) / "inspect_report.md", md)
    return md
