"""`irsflow teacher ...` and `irsflow inspect`: the teacher labelling subflow from the shell.

    irsflow teacher label --job JOB_ID [--iteration 2]        # or --samples answers.jsonl
    irsflow teacher qc [--set gold=builtin:gold --set red_team=builtin:redteam]
    irsflow teacher prompts --source builtin:demo --source builtin:redteam:high-risk --n 200 --out prompts.jsonl
    irsflow teacher export --out teacher_judgements.jsonl     # the whole cache, one judgement a line
    irsflow inspect JOB_ID                                    # report from cache + rules; no API call

--teacher / --scoring take JSON files of the request's `teacher` / `scoring` blocks (no keys:
the key comes from $DEEPSEEK_API_KEY / $IRSFLOW_TEACHER_API_KEY or the Secret block teacher-api-key).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from irsflow.errors import ConfigError


def load_json(cls, path: str | None, what: str):
    """``cls`` validated from the JSON file at ``path`` (None without a path); a bad file is a ConfigError."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path} ({err.strerror})") from None
    try:
        return cls.model_validate(json.loads(text))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except ValidationError as err:
        from irsflow.config import format_validation_error

        raise ConfigError(
            f"{path}: invalid {what}\n"
            + "\n".join(f"{what}.{line}" for line in format_validation_error(err).splitlines())
        ) from None


def _configs(args):
    from irsflow.config import ScoringConfig
    from irsflow.teacher import TeacherConfig

    return load_json(TeacherConfig, args.teacher, "teacher"), load_json(ScoringConfig, args.scoring, "scoring")


def _print(summary: dict) -> None:
    print(json.dumps({k: v for k, v in summary.items() if k != "report_markdown"}, indent=2, ensure_ascii=False))


def cmd_label(args) -> int:
    teacher, scoring = _configs(args)
    from flows.teacher_labelling import teacher_labelling

    _print(
        teacher_labelling(
            job_id=args.job,
            samples=args.samples,
            iterations=args.iteration or None,
            teacher=teacher,
            scoring=scoring,
            out_dir=args.out,
        )
    )
    return 0


def cmd_qc(args) -> int:
    from irsflow.config import ScoringConfig
    from irsflow.teacher import TeacherConfig

    teacher, scoring = _configs(args)
    sets = dict(s.split("=", 1) for s in args.set) if args.set else None
    if args.set and not all("=" in s for s in args.set):
        raise ConfigError("--set: expected NAME=QUESTION_SET, e.g. gold=builtin:gold")
    from flows.teacher_labelling import teacher_quality_check

    _print(
        teacher_quality_check(
            sets=sets,
            teacher=teacher or TeacherConfig(),
            scoring=scoring or ScoringConfig(),
            score_floor=args.score_floor,
            out_dir=args.out,
        )
    )
    return 0


def cmd_prompts(args) -> int:
    from irsflow.labelling.quality import PromptSource, build_prompt_set

    sources = [PromptSource(s.removesuffix(":high-risk"), high_risk=s.endswith(":high-risk")) for s in args.source]
    rows = build_prompt_set(
        sources,
        n=args.n,
        min_high_risk_share=args.min_high_risk_share,
        seed=args.seed,
        rules=args.rules,
        out=Path(args.out),
    )
    high = sum(r["meta"]["high_risk"] for r in rows)
    print(f"{args.out}: {len(rows)} prompts, {high} high-risk ({high / len(rows):.0%})")
    return 0


def cmd_export(args) -> int:
    from irsflow.teacher import JudgementCache, TeacherConfig

    teacher = load_json(TeacherConfig, args.teacher, "teacher") or TeacherConfig()
    path = teacher.resolved_cache_path()
    if not path.exists():
        raise ConfigError(f"teacher cache: none at {path}")
    cache = JudgementCache(path)
    try:
        print(f"{args.out}: {cache.export_jsonl(Path(args.out))} judgements")
    finally:
        cache.close()
    return 0


def cmd_inspect(args) -> int:
    from irsflow.jobs.job import open_job
    from irsflow.labelling.labelling import inspect_job

    teacher, scoring = _configs(args)
    store = open_job(args.job_id)
    summary = inspect_job(store, scoring=scoring, teacher=teacher)
    if not args.no_artifact:
        _publish(store.job_id, summary["report_markdown"])
    _print(summary)
    return 0


def _publish(job_id: str, markdown: str) -> None:
    """The report as a Prefect markdown artifact, when a Prefect API is configured or running."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        return
    try:
        from prefect.artifacts import create_markdown_artifact

        from tasks.artifacts import artifact_key

        create_markdown_artifact(
            markdown=markdown, key=artifact_key(job_id, "inspect"), description=f"inspection report of job {job_id}"
        )
    except Exception as err:  # noqa: BLE001 - the files are written; the artifact is a convenience
        print(f"warning: no Prefect artifact ({type(err).__name__}: {err})")


def _common(p) -> None:
    p.add_argument("--teacher", default=None, help="teacher block as JSON (base_url, model, budget_usd, ...)")
    p.add_argument("--scoring", default=None, help="scoring block as JSON (rules, fusion)")


def add_teacher_parsers(sub) -> None:
    t = sub.add_parser("teacher", help="teacher LLM labelling, quality checks, RL prompt sets")
    ts = t.add_subparsers(dest="teacher_command", required=True)
    lab = ts.add_parser("label", help="judge a job's chosen answers or a samples file (through Prefect)")
    src = lab.add_mutually_exclusive_group(required=True)
    src.add_argument("--job", default=None, help="job id: label its samples.jsonl")
    src.add_argument("--samples", default=None, help="JSONL of {id, prompt, answer, context?}")
    lab.add_argument("--iteration", type=int, action="append", help="only these iterations (repeatable)")
    lab.add_argument("--out", default=None, help="output folder (default <job>/teacher)")
    _common(lab)
    lab.set_defaults(fn=cmd_label)
    qc = ts.add_parser("qc", help="the teacher reviews gold / red-team reference answers")
    qc.add_argument("--set", action="append", help="NAME=QUESTION_SET (default gold + red_team builtins)")
    qc.add_argument("--score-floor", type=float, default=0.6, help="flag references the teacher scores below this")
    qc.add_argument("--out", default=None)
    _common(qc)
    qc.set_defaults(fn=cmd_qc)
    pr = ts.add_parser("prompts", help="sample an RL prompt set with a minimum red-team share")
    pr.add_argument(
        "--source",
        action="append",
        required=True,
        help="question set; suffix :high-risk marks a red-team set (repeatable)",
    )
    pr.add_argument("--n", type=int, required=True)
    pr.add_argument("--min-high-risk-share", type=float, default=0.4)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--rules", default="builtin:default", help="rules file whose red flags mark high-risk prompts")
    pr.add_argument("--out", required=True)
    pr.set_defaults(fn=cmd_prompts)
    ex = ts.add_parser("export", help="write the judgement cache as teacher_judgements.jsonl")
    ex.add_argument("--out", required=True)
    ex.add_argument("--teacher", default=None)
    ex.set_defaults(fn=cmd_export)
    ins = sub.add_parser("inspect", help="report per sample: answer, rule scores, teacher score/comment, conflicts")
    ins.add_argument("job_id")
    ins.add_argument("--no-artifact", action="store_true", help="files only, no Prefect markdown artifact")
    _common(ins)
    ins.set_defaults(fn=cmd_inspect)
