"""What kind of failure is this? Transient (retry with backoff), out of memory (retry smaller),
or everything else (fail at once).

    failure_kind(err)                 # "input" | "oom" | "transient" | "fatal"
    halve_on_oom(run, 16, "irs_config.gen_batch_size", context="generate (n_candidates=8)")

Bad input never retries: the same input fails the same way. Out-of-memory is retried here, inside
the phase, with the batch halved down to 1 (seed 003 did this by hand), because the orchestrator's
retry would only repeat the same batch size. Transient errors are left to the orchestrator's
retries (see ``tasks/common.py``), which know about backoff and give up after a few tries.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from irsflow.errors import InputError, IrsflowError

log = logging.getLogger("irsflow.retry")
T = TypeVar("T")

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# Matched by class name so the library needs neither httpx, requests nor openai to classify
# their errors (each raises its own ConnectionError/Timeout subclasses).
_TRANSIENT_NAMES = {"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "ReadError",
                    "RemoteProtocolError", "APIConnectionError", "APITimeoutError", "RateLimitError",
                    "InternalServerError", "ServiceUnavailableError", "Timeout", "ConnectionError",
                    "ChunkedEncodingError"}


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


def halve_on_oom(run: Callable[[int], T], batch_size: int, setting: str, context: str = "",
                 on_retry: Callable[[int, BaseException], None] | None = None) -> T:
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
                    f"or set irs_config.load_in_4bit") from err
            batch = max(1, batch // 2)
            log.warning("out of memory at %s=%d; retrying with %d", setting, tried[-1], batch)
            if on_retry is not None:
                on_retry(batch, err)
