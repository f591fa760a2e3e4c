"""Teacher labelling as Prefect flows (deployments on the cpu pool; subflows of the weekly cycle).

    teacher-labelling       a job's samples.jsonl (job_id) or a samples file -> rule scores, teacher
                            judgements, fused rlaif reward, conflicts, inspection report
    teacher-quality-check   the teacher reviews the reference answers of gold / red-team sets

Run it:  irsflow teacher label --job JOB_ID          (or --samples answers.jsonl)
         prefect deployment run teacher-labelling/teacher-labelling -p job_id=JOB_ID
Key: $IRSFLOW_TEACHER_API_KEY / $DEEPSEEK_API_KEY, or the Prefect Secret block `teacher-api-key`.
Outputs: <job dir>/teacher/ (or <data dir>/teacher/runs/<samples file stem>/): see
irsflow/labelling/labelling.py. A rerun or a retried run re-bills nothing: judgements are cached.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from irsflow.config import ScoringConfig
from irsflow.errors import InputError
from irsflow.jobs.job import job_request, open_job
from irsflow.store import data_dir
from irsflow.teacher.client import TeacherConfig
from tasks.artifacts import artifact_key, safe_key
from tasks.logs import route_library_logs
from tasks.teacher import label_task, quality_task

logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per teacher call drowns the run log


@flow(name="teacher-labelling", log_prints=False)
def teacher_labelling(
    job_id: str | None = None,
    samples: str | None = None,
    iterations: list[int] | None = None,
    teacher: TeacherConfig | None = None,
    scoring: ScoringConfig | None = None,
    out_dir: str | None = None,
) -> dict:
    """Label a job's chosen answers (``job_id``, optionally only ``iterations``) or a samples file.
    ``teacher``/``scoring`` default to the job's request (else the defaults: DeepSeek, shipped rules)."""
    route_library_logs()
    if bool(job_id) == bool(samples):
        raise InputError("teacher-labelling: give exactly one of job_id or samples")
    if job_id:
        store = open_job(job_id)
        req = job_request(store)
        teacher, scoring = teacher or req.teacher or TeacherConfig(), scoring or req.scoring
        out = Path(out_dir) if out_dir else store.dir / "teacher"
        source, key = {"job_id": store.job_id, "iterations": iterations}, artifact_key(store.job_id, "teacher")
    else:
        if not Path(samples).is_file():
            raise InputError(f"samples: no file {samples}")
        teacher, scoring = teacher or TeacherConfig(), scoring or ScoringConfig()
        out = Path(out_dir) if out_dir else data_dir() / "teacher" / "runs" / Path(samples).stem
        source = {"samples": str(Path(samples).resolve())}
        key = safe_key(f"teacher-{Path(samples).stem}")
    summary = label_task(source, scoring, teacher, str(out))
    # the report's table stops at MAX_TABLE_ROWS (a 10k-row artifact is unreadable); the CSV has all
    create_markdown_artifact(
        markdown=summary.pop("report_markdown"),
        key=key,
        description=f"teacher labelling: scores, conflicts, best answers ({out})",
    )
    summary["out_dir"] = str(out)
    return summary


@flow(name="teacher-quality-check", log_prints=False)
def teacher_quality_check(
    sets: dict[str, str] | None = None,
    teacher: TeacherConfig = TeacherConfig(),
    scoring: ScoringConfig = ScoringConfig(),
    score_floor: float = 0.6,
    out_dir: str | None = None,
) -> dict:
    """The teacher reviews the reference answers of ``sets`` (name -> question set; default the
    shipped gold and red-team sets) and reports the ones it flags."""
    route_library_logs()
    sets = sets or {"gold": "builtin:gold", "red_team": "builtin:redteam"}
    out = Path(out_dir) if out_dir else data_dir() / "teacher" / "quality_check"
    summary = quality_task(sets, scoring, teacher, str(out), score_floor)
    create_markdown_artifact(
        markdown=(out / "qc_report.md").read_text(encoding="utf-8"),
        key="teacher-quality-check",
        description="reference answers the teacher or the rules flag",
    )
    return {**summary, "out_dir": str(out)}
