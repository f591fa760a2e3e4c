"""What one chat-completion reply of the teacher says: a verdict, or which kind of failure it is.

    outcome = read_reply(resp, example)      # resp: the openai SDK's ChatCompletion
    outcome.status                           # "ok" | "truncated" | "schema_mismatch" | ...
    tokens = read_usage(resp.usage)          # prompt / cache-hit / completion / reasoning tokens

Only ``message.content`` is ever parsed. A thinking model (DeepSeek V4 with thinking enabled)
also returns ``message.reasoning_content``, its chain of thought: it is counted (its tokens are
billed) but never read as the verdict, even when ``content`` is blank and the reasoning holds
something that looks like JSON. Shapes: openai-python ``types/chat/chat_completion.py`` and
``types/completion_usage.py``; DeepSeek's "Create Chat Completion", "Thinking Mode" and
"Context Caching" pages (``finish_reason`` ``insufficient_system_resource``,
``usage.prompt_cache_hit_tokens``, ``usage.completion_tokens_details.reasoning_tokens``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

OK = "ok"
# The judge answered, but the answer cannot be used. Deterministic enough (temperature 0) that
# asking again returns the same, so these are cached: a rerun makes no call for them.
TRUNCATED = "truncated"  # finish_reason "length": cut off at max_tokens
SCHEMA_MISMATCH = "schema_mismatch"  # JSON, but not the TeacherReply schema
INVALID_JSON = "invalid_json"  # not JSON at all
COPIED_EXAMPLE = "copied_example"  # the template's example reply, repeated word for word
CONTENT_FILTER = "content_filter"  # finish_reason "content_filter": the endpoint withheld it
REPLY_FAILURES = (TRUNCATED, SCHEMA_MISMATCH, INVALID_JSON, COPIED_EXAMPLE, CONTENT_FILTER)
# No answer to judge: the endpoint or the network failed, or the reply was blank (DeepSeek's
# JSON mode documents blank content as something that happens). Never cached: a rerun retries.
FAILED = "failed"
BLANK = "blank"
RETRYABLE_FAILURES = (FAILED, BLANK)
FAILURES = REPLY_FAILURES + RETRYABLE_FAILURES
# Not failures: the budget cap stopped the run first; a cache-only lookup found nothing.
BUDGET_STOPPED = "budget_stopped"
MISSING = "missing"
STATUSES = (OK, *FAILURES, BUDGET_STOPPED, MISSING)
# DeepSeek: "the generation was interrupted for lack of inference resources": transient.
TRANSIENT_FINISH = {"insufficient_system_resource"}


class TeacherReply(BaseModel):
    """The JSON object the teacher must return."""

    model_config = ConfigDict(strict=True, extra="ignore")
    teacher_score: float = Field(ge=0, le=1)
    safety_flag: bool
    comment: str
    best_answer: str | None = None


@dataclass(frozen=True)
class Outcome:
    status: str
    reply: TeacherReply | None = None
    error: str = ""
    finish_reason: str | None = None
    reasoning_chars: int = 0  # length of reasoning_content, never parsed

    @property
    def transient(self) -> bool:
        return self.finish_reason in TRANSIENT_FINISH


def _norm(text: str | None) -> str:
    return " ".join((text or "").split()).casefold()


def is_copied_example(reply: TeacherReply, example: dict | None) -> bool:
    """The reply repeats the template's example: its comment and best answer word for word
    (whitespace and case aside). The score alone may differ and it is still a copy."""
    if not example:
        return False
    return _norm(reply.comment) == _norm(example.get("comment")) and _norm(reply.best_answer) == _norm(
        example.get("best_answer")
    )


def read_reply(resp, example: dict | None) -> Outcome:
    if not resp.choices:
        return Outcome(BLANK, error="blank reply: no choices")
    choice = resp.choices[0]
    finish = getattr(choice, "finish_reason", None)
    message = choice.message
    content = (message.content or "").strip()
    reasoning = getattr(message, "reasoning_content", None) or ""
    seen = dict(finish_reason=finish, reasoning_chars=len(reasoning))
    if finish == "length":  # before parsing: a cut-off reply may even be valid JSON by chance
        return Outcome(TRUNCATED, error=f"truncated: finish_reason 'length' after {len(content)} characters", **seen)
    if finish == "content_filter":
        return Outcome(CONTENT_FILTER, error="content_filter: the endpoint withheld the reply", **seen)
    if finish in TRANSIENT_FINISH:
        return Outcome(FAILED, error=f"finish_reason {finish!r}", **seen)
    if not content:
        why = " (reasoning_content only)" if reasoning else ""
        return Outcome(BLANK, error=f"blank reply{why}", **seen)
    try:
        data = json.loads(content)
    except ValueError as e:
        return Outcome(INVALID_JSON, error=f"invalid JSON: {str(e)[:160]}", **seen)
    try:
        reply = TeacherReply.model_validate(data)
    except ValidationError as e:
        fields = ", ".join(".".join(map(str, err["loc"])) or "(root)" for err in e.errors())
        return Outcome(SCHEMA_MISMATCH, error=f"schema mismatch: {fields}", **seen)
    if is_copied_example(reply, example):
        return Outcome(COPIED_EXAMPLE, reply=reply, error="copied the template's example reply", **seen)
    return Outcome(OK, reply=reply, **seen)


@dataclass(frozen=True)
class Tokens:
    prompt: int = 0
    cache_hit: int = 0  # of prompt: billed at the cache-hit rate where the price has one
    completion: int = 0  # includes reasoning (OpenAI's and DeepSeek's definition)
    reasoning: int = 0


def _int(obj, name: str) -> int:
    v = getattr(obj, name, None) if obj is not None else None
    return v if isinstance(v, int) and v > 0 else 0


def read_usage(usage) -> Tokens:
    """Token counts from ``usage`` (None -> zeros; the caller charges its bound instead).
    ``completion_tokens`` counts the reasoning tokens on DeepSeek and OpenAI; a server that
    reports more reasoning tokens than completion tokens left them out, so they are added."""
    prompt, completion = _int(usage, "prompt_tokens"), _int(usage, "completion_tokens")
    reasoning = _int(getattr(usage, "completion_tokens_details", None), "reasoning_tokens")
    hit = _int(usage, "prompt_cache_hit_tokens") or _int(getattr(usage, "prompt_tokens_details", None), "cached_tokens")
    if reasoning > completion:
        completion += reasoning
    return Tokens(prompt=prompt, cache_hit=min(hit, prompt), completion=completion, reasoning=reasoning)
