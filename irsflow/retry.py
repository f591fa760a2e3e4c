"""What kind of failure is this? Transient (retry with backoff), out of memory (retry smaller),
or everything else (fail at once).

    failure_kind(err)                 # "input" | "oom" | "transient" | "fatal"
    retry_after_s(resp.headers)       # seconds a 429/503 asks us to wait, or None
    halve_on_oom(run, 16, "irs_config.gen_batch_size", context="generate (n_candidates=8)")

Bad input never retries: the same input fails the same way. Out-of-memory is retried here, inside
the phase, with the batch halved down to 1 (seed 003 did this by hand), because the orchestrator's
retry would only repeat the same batch size. Transient errors are left to the orchestrator's
retries (see ``tasks/options.py``), which know about backoff and give up after a few tries.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import TypeVar

from irsflow.errors import InputError, IrsflowError

log = logging.getLogger("irsflow.retry")
T = TypeVar("T")

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# Matched by class name so the library needs neither httpx, requests nor openai to classify
# their errors (each raises its own ConnectionError/Timeout subclasses).
_TRANSIENT_NAMES = {
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "ReadError",
    "RemoteProtocolError",
    "APIConnectionError",
    "APITimeoutError",
    "RateLimitError",
    "InternalServerError",
    "ServiceUnavailableError",
    "Timeout",
    "ConnectionError",
    "ChunkedEncodingError",
}


class OutOfMemory(IrsflowError):
    """Every batch size down to 1 ran out of device memory."""


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def status_code(err: BaseException) -> int | None:
    """The HTTP status an exception carries (``.status_code`` or ``.response.status_code``)."""
    for obj in (err, getattr(err, "response", None)):
        code = getattr(obj, "status_code", None) if obj is not None else None
        if isinstance(code, int):
            return code
    return None


def _header(headers: Mapping | None, name: str) -> str | None:
    # Case-insensitive by hand: a plain dict from a test server spells it "Retry-After", httpx
    # lowers it, and urllib's message object keeps whatever the server sent.
    for key, value in (headers or {}).items():
        if str(key).lower() == name:
            return str(value).strip()
    return None


def _number(value: str | None) -> float | None:
    try:
        return float(value)  # "7", "1.5" and " 7 " all occur in the wild
    except (TypeError, ValueError):
        return None


def _usable(seconds: float | None) -> bool:
    return seconds is not None and math.isfinite(seconds) and seconds >= 0


def retry_after_s(headers: Mapping | None, now: float | None = None) -> float | None:
    """Seconds to wait before retrying, from a response's headers; None when they give no usable hint.

    Read in order: ``retry-after-ms`` (milliseconds; OpenAI-compatible servers send it), then
    ``Retry-After`` as delay-seconds (fractions allowed) or an HTTP date (a past date gives 0.0).
    Header names match in any case. An empty, negative, non-finite or unparsable value counts as
    absent, so the caller falls back to its own back-off; a bad ``retry-after-ms`` still lets
    ``Retry-After`` speak. ``now`` (epoch seconds) is for tests.
    """
    ms = _number(_header(headers, "retry-after-ms"))
    if _usable(ms):
        return ms / 1000
    value = _header(headers, "retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds if _usable(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" in an HTTP date means UTC, not this machine's local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_oom(err: BaseException) -> bool:
    for e in _chain(err):
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError == torch.cuda.OutOfMemoryError
            return True
        if isinstance(e, RuntimeError) and "out of memory" in str(e).lower():
            return True  # older torch and some kernels raise a bare RuntimeError
    return False


def failure_kind(err: BaseException) -> str:
    chain = list(_chain(err))
    if any(isinstance(e, InputError) for e in chain):
        return "input"
    if any(isinstance(e, OutOfMemory) for e in chain) or is_oom(err):
        return "oom"
    for e in chain:
        code = status_code(e)
        if code is not None:
            return "transient" if code in TRANSIENT_STATUS else "fatal"
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _TRANSIENT_NAMES:
            return "transient"
    return "fatal"


def is_transient(err: BaseException) -> bool:
    return failure_kind(err) == "transient"


def halve_on_oom(
    run: Callable[[int], T],
    batch_size: int,
    setting: str,
    context: str = "",
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call ``run(batch)`` with ``batch_size``, halving it after each out-of-memory error down to 1.
    Raises :class:`OutOfMemory` naming every size tried when even 1 does not fit."""
    from irsflow.models import free_memory

    tried: list[int] = []
    batch = max(1, int(batch_size))
    while True:
        tried.append(batch)
        try:
            return run(batch)
        except Exception as err:
            if not is_oom(err):
                raise
            free_memory()
            if batch == 1:
                raise OutOfMemory(
                    f"out of device memory in {context or 'this phase'} at {setting} "
                    f"{', '.join(map(str, tried))}: lower n_candidates, max_new_tokens or max_seq_length, "
                    f"or set irs_config.load_in_4bit"
                ) from err
            batch = max(1, batch // 2)
            log.warning("out of memory at %s=%d; retrying with %d", setting, tried[-1], batch)
            if on_retry is not None:
                on_retry(batch, err)
