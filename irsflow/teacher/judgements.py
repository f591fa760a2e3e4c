"""The result of judging one item, and the rule that turns too many failures into an error.

    check_failures(judgements, settings)   # raises TeacherUnavailable / TeacherRepliesUnusable

A scoring phase must not finish on rules alone because the teacher was down: when more judgements
failed than ``max_failed_share`` allows, it fails with the counts. Failures with no reply (endpoint
down, blank) are retryable; unusable replies the judge gave are not (the same would come back).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

from pydantic import BaseModel

from irsflow.errors import InputError, IrsflowError
from irsflow.teacher.replies import (
    CONTENT_FILTER,
    COPIED_EXAMPLE,
    FAILURES,
    INVALID_JSON,
    RETRYABLE_FAILURES,
    SCHEMA_MISMATCH,
    STATUSES,
    TRUNCATED,
)
from irsflow.teacher.settings import TeacherConfig

log = logging.getLogger("irsflow.teacher")


class Judgement(BaseModel):
    id: str
    status: Literal[STATUSES]  # see replies.py; missing: a cache-only lookup found none
    teacher_score: float | None = None
    safety_flag: bool | None = None
    comment: str | None = None
    best_answer: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    cached: bool = False
    attempts: int = 0
    key: str

    @property
    def failed(self) -> bool:
        return self.status in FAILURES


class TeacherUnavailable(IrsflowError):
    """More judgements failed than ``max_failed_share`` allows, some for want of an answer (the
    endpoint down, 5xx, timeouts, blank replies). Retryable: finished judgements are cached, so a
    retry asks only for the failed ones. ``status_code`` 503 makes ``irsflow.retry`` class it transient."""

    status_code = 503

    def __init__(self, message: str, failed: int, total: int, by_status: dict[str, int]):
        super().__init__(message)
        self.failed, self.total, self.by_status = failed, total, by_status


class TeacherRepliesUnusable(InputError):
    """More judgements failed than ``max_failed_share`` allows, all with replies the judge gave
    (truncated, schema mismatch, copied example...). Asking again returns the same, so it is not
    retried: the message names the setting to change."""

    def __init__(self, message: str, failed: int, total: int, by_status: dict[str, int]):
        super().__init__(message)
        self.failed, self.total, self.by_status = failed, total, by_status


_HINTS = {
    TRUNCATED: "raise teacher.max_tokens",
    COPIED_EXAMPLE: "the judge repeats the template's example",
    SCHEMA_MISMATCH: "the judge does not follow the template's JSON schema",
    INVALID_JSON: "the judge does not answer in JSON",
    CONTENT_FILTER: "the endpoint withholds replies",
}


def check_failures(judgements: list[Judgement], settings: TeacherConfig, what: str = "judgements") -> None:
    """Raise when more of ``judgements`` failed than ``settings.max_failed_share`` allows; the
    error carries the failure count and the count of each status."""
    failed = [j for j in judgements if j.failed]
    if not failed or len(failed) <= settings.max_failed_share * len(judgements):
        if failed:
            log.warning(
                "teacher: %d of %d %s failed, within max_failed_share %.2f",
                len(failed),
                len(judgements),
                what,
                settings.max_failed_share,
            )
        return
    by_status = dict(Counter(j.status for j in failed).most_common())
    counts = ", ".join(f"{n} {s}" for s, n in by_status.items())
    msg = (
        f"teacher: {len(failed)} of {len(judgements)} {what} failed ({counts}); teacher.max_failed_share "
        f"allows {settings.max_failed_share:g}"
    )
    args = dict(failed=len(failed), total=len(judgements), by_status=by_status)
    retryable = [j for j in failed if j.status in RETRYABLE_FAILURES]
    if retryable:
        raise TeacherUnavailable(
            f"{msg}. First error: {retryable[0].error}. Finished judgements are cached: "
            f"a retry asks only for the failed ones",
            **args,
        )
    hints = "; ".join(_HINTS[s] for s in by_status if s in _HINTS)
    raise TeacherRepliesUnusable(f"{msg}: {hints}", **args)
