"""Task options: which failures are retried, and the phase task decorator.

- ``retry_if_transient``: retry HTTP 429/5xx and connection errors only; bad input fails at once;
- ``transient_retries(n)``: the retry options (count, exponential backoff with jitter, that condition);
- ``phase_task``: a task whose result is persisted under the phase's content key (reruns resume),
  retried like the above (``IRSFLOW_TASK_RETRIES`` times, backoff factor ``IRSFLOW_RETRY_BACKOFF_S``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from prefect import task
from prefect.tasks import exponential_backoff

from irsflow.jobs.job import load_job
from irsflow.jobs.resume import phase_key
from irsflow.retry import failure_kind


def retry_if_transient(task, task_run, state) -> bool:
    """Retry HTTP 429/5xx and connection errors only. Bad input fails the same way every time, and
    out-of-memory was already retried inside the phase with smaller batches."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as err:  # the failed state re-raises the task's exception
        kind = failure_kind(err)
        logging.getLogger("irsflow.prefect").log(
            logging.WARNING if kind == "transient" else logging.ERROR,
            "%s failed (%s): %s: %s%s",
            task_run.name,
            kind,
            type(err).__name__,
            err,
            "; retrying" if kind == "transient" else "; not retrying",
        )
        return kind == "transient"
    return False


def transient_retries(n: int, backoff_s: float = 10) -> dict:
    """Task options: retry HTTP 429/5xx and connection errors ``n`` times with exponential backoff
    (factor ``backoff_s`` seconds) and jitter; bad input and other failures fail at once
    (``retry_if_transient``)."""
    return dict(
        retries=n,
        retry_delay_seconds=exponential_backoff(backoff_factor=backoff_s),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_if_transient,
    )


def _phase_cache_key(phase: str) -> Callable:
    def key(context, parameters: dict) -> str:
        store, req = load_job(parameters["job_id"])
        return phase_key(store, req, parameters["iteration"], phase)

    return key


def phase_task(phase: str, tag: str, name: str):
    """Decorator for a phase task taking ``(job_id, iteration)``."""
    return task(
        name=name,
        tags=[tag],
        task_run_name=f"{name}-iter-{{iteration}}",
        persist_result=True,
        cache_key_fn=_phase_cache_key(phase),
        **transient_retries(
            int(os.environ.get("IRSFLOW_TASK_RETRIES", "3")), float(os.environ.get("IRSFLOW_RETRY_BACKOFF_S", "10"))
        ),
    )
