"""CPU tasks of the teacher: labelling and the quality check. They never load a model; the key is
fetched inside the task (env or Secret block `teacher-api-key`) so it is never a parameter, a
log line or an artifact."""
from __future__ import annotations

from prefect import task

from irsflow.config import ScoringConfig
from irsflow.teacher.client import TeacherConfig
from irsflow.job import open_job
from irsflow.teacher.labelling import items_from_job, label_items, load_items
from irsflow.teacher.quality import quality_check
from tasks.common import CPU_TAG, require_teacher_key, transient_retries



class TeacherUnavailable(RuntimeError):
    """Every call failed (endpoint down, all 5xx): the run fails and a retry resumes from the cache."""
    status_code = 503  # classified transient by irsflow.retry


def settings_with_key(teacher: TeacherConfig):
    return teacher.with_key(require_teacher_key())


def _check(summary: dict) -> dict:
    if summary["teacher_ok"] == 0 and summary["teacher_failed"] > 0:
        raise TeacherUnavailable(f"teacher: all {summary['teacher_failed']} calls failed; finished work is cached")
    return summary


@task(name="teacher-label", tags=[CPU_TAG], **transient_retries(2))
def label_task(source: dict, scoring: ScoringConfig, teacher: TeacherConfig, out_dir: str) -> dict:
    """``source``: {"job_id", "iterations"?} or {"samples"}; items are read here, not passed around."""
    from pathlib import Path

    if source.get("job_id"):
        items = items_from_job(open_job(source["job_id"]), source.get("iterations"))
        what, title = f"job {source['job_id']}", f"Teacher labelling of job {source['job_id']}"
    else:
        items = load_items(source["samples"])
        what, title = source["samples"], f"Teacher labelling of {Path(source['samples']).name}"
    settings = settings_with_key(teacher)
    return _check(label_items(items, scoring, settings, Path(out_dir), source=what, title=title))


@task(name="teacher-quality-check", tags=[CPU_TAG], **transient_retries(2))
def quality_task(sets: dict[str, str], scoring: ScoringConfig, teacher: TeacherConfig, out_dir: str,
                 score_floor: float) -> dict:
    from pathlib import Path

    return _check(quality_check(sets, scoring, settings_with_key(teacher), Path(out_dir), score_floor=score_floor))
