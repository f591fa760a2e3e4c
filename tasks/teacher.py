"""CPU tasks of the teacher: labelling and the quality check. They never load a model; the key is
fetched inside the task (env or Secret block `teacher-api-key`) so it is never a parameter, a
log line or an artifact."""

from __future__ import annotations

from prefect import task

from irsflow.jobs.job import open_job
from irsflow.labelling.labelling import items_from_job, label_items, load_items
from irsflow.labelling.quality import quality_check
from irsflow.rewards.settings import ScoringConfig
from irsflow.teacher.client import TeacherConfig
from irsflow.teacher.judgements import TeacherRepliesUnusable, TeacherUnavailable
from irsflow.teacher.replies import RETRYABLE_FAILURES
from tasks.credentials import require_teacher_key
from tasks.limits import CPU_TAG
from tasks.options import transient_retries


def settings_with_key(teacher: TeacherConfig):
    return teacher.with_key(require_teacher_key())


def _check(summary: dict) -> dict:
    """A labelling report records each failed item; only a run where nothing was judged fails:
    retried (TeacherUnavailable) when some items lacked an answer (endpoint down, 5xx, blank), not
    retried (TeacherRepliesUnusable) when the judge answered every item unusably."""
    failed, by_status = summary["teacher_failed"], summary.get("teacher_statuses", {})
    if summary["teacher_ok"] > 0 or failed == 0:
        return summary
    failures = {k: v for k, v in by_status.items() if k != "ok"}
    msg = f"teacher: all {failed} judgements failed ({failures}); finished work is cached"
    if any(by_status.get(s) for s in RETRYABLE_FAILURES):
        raise TeacherUnavailable(msg, failed=failed, total=summary["items"], by_status=failures)
    raise TeacherRepliesUnusable(msg, failed=failed, total=summary["items"], by_status=failures)


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
def quality_task(
    sets: dict[str, str], scoring: ScoringConfig, teacher: TeacherConfig, out_dir: str, score_floor: float
) -> dict:
    from pathlib import Path

    return _check(quality_check(sets, scoring, settings_with_key(teacher), Path(out_dir), score_floor=score_floor))
