"""Teacher LLM judging (seed 001): an OpenAI-compatible endpoint scores answers, with a durable
cache, bounded retries, bounded concurrency and a USD budget cap. See ``client.py``; its settings
and prices ``settings.py``, how one reply is read ``replies.py``, per-item results and the
failure rule ``judgements.py``, run reports ``report.py``. Labelling runs and quality checks built on
it live in ``irsflow.labelling``.

May import: the base modules only (``irsflow.errors``, ``.store``, ``.paths``, ``.dataset``, ``.retry``,
``.models``); the rewards, the labelling runs and everything else sit above it."""

from irsflow.teacher.cache import JudgementCache, judgement_key
from irsflow.teacher.client import (
    Judgement,
    Price,
    TeacherConfig,
    TeacherRepliesUnusable,
    TeacherSettings,
    TeacherUnavailable,
    ajudge_items,
    cached_judgements,
    check_failures,
    judge_items,
    load_template,
    read_usage,
)
from irsflow.teacher.replies import TeacherReply

__all__ = [
    "Judgement",
    "JudgementCache",
    "Price",
    "TeacherConfig",
    "TeacherRepliesUnusable",
    "TeacherReply",
    "TeacherSettings",
    "TeacherUnavailable",
    "ajudge_items",
    "cached_judgements",
    "check_failures",
    "judge_items",
    "judgement_key",
    "load_template",
    "read_usage",
]
