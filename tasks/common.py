"""Shared Prefect plumbing for the phase tasks.

- the ``gpu`` tag concurrency limit (one model resident across every job on a server);
- ``phase_task``: a task whose result is persisted under the phase's content key (reruns resume),
  that retries transient failures with backoff and fails bad input at once;
- run logs: the library's ``irsflow.*`` loggers go to the flow-run logs in the UI (and, through
  ``JobStore.log_to_file``, to the job's ``train.log``), so both tell the same story.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from prefect import get_client, task
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectNotFound
from prefect.logging.handlers import APILogHandler
from prefect.tasks import exponential_backoff

from irsflow.config import TrainRequest
from irsflow.jobs.job import job_request as read_job_request, open_job
from irsflow.jobs.resume import phase_key
from irsflow.retry import failure_kind

GPU_TAG = "gpu"
CPU_TAG = "cpu"
log = logging.getLogger("irsflow.prefect")


class _RunLogHandler(APILogHandler):
    """Prefect's API log handler, silent outside a run (the CLI and doctor log without one)."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            super().emit(record)


def route_library_logs() -> None:
    """Send ``irsflow.*`` records to the current run's logs (what PREFECT_LOGGING_EXTRA_LOGGERS does,
    but without depending on every worker's environment). Every flow calls it first; idempotent."""
    lib = logging.getLogger("irsflow")
    if not any(isinstance(h, APILogHandler) for h in lib.handlers):
        lib.addHandler(_RunLogHandler())
    if lib.level == logging.NOTSET or lib.level > logging.INFO:
        lib.setLevel(logging.INFO)


def gpu_slots() -> int:
    return int(os.environ.get("IRSFLOW_GPU_SLOTS", "1"))


def ensure_gpu_limit(slots: int | None = None) -> int:
    """Create the ``gpu`` tag concurrency limit if it is missing. Without it, gpu-tagged tasks run
    unlimited, silently. An existing limit is left as the operator set it."""
    slots = gpu_slots() if slots is None else slots
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_concurrency_limit_by_tag(GPU_TAG)
            return existing.concurrency_limit
        except ObjectNotFound:
            client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)
            log.info("created concurrency limit tag:%s = %d", GPU_TAG, slots)
            return slots


def stable_run_id() -> str:
    """An id for what this flow run writes that a retry of the run gets again: the run's creation
    time and id (the start time changes on a retry). Outside a run, a fresh id."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        from irsflow.store import new_job_id

        return new_job_id()
    with get_client(sync_client=True) as client:
        created = client.read_flow_run(run_id).created
    return f"{created:%Y%m%dT%H%M%SZ}-{run_id[:8]}"


def job_request(job_id: str) -> TrainRequest:
    return read_job_request(open_job(job_id))


def retry_if_transient(task, task_run, state) -> bool:
    """Retry HTTP 429/5xx and connection errors only. Bad input fails the same way every time, and
    out-of-memory was already retried inside the phase with smaller batches."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as err:  # the failed state re-raises the task's exception
        kind = failure_kind(err)
        logging.getLogger("irsflow.prefect").log(
            logging.WARNING if kind == "transient" else logging.ERROR,
            "%s failed (%s): %s: %s%s", task_run.name, kind, type(err).__name__, err,
            "; retrying" if kind == "transient" else "; not retrying")
        return kind == "transient"
    return False


def _phase_cache_key(phase: str) -> Callable:
    def key(context, parameters: dict) -> str:
        return phase_key(open_job(parameters["job_id"]), job_request(parameters["job_id"]), parameters["iteration"], phase)
    return key


def transient_retries(n: int) -> dict:
    """Task options: retry HTTP 429/5xx and connection errors ``n`` times with exponential backoff
    and jitter; bad input and other failures fail at once (``retry_if_transient``)."""
    return dict(retries=n, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5,
                retry_condition_fn=retry_if_transient)


def phase_task(phase: str, tag: str, name: str):
    """Decorator for a phase task taking ``(job_id, iteration)``."""
    return task(
        name=name, tags=[tag], task_run_name=f"{name}-iter-{{iteration}}",
        persist_result=True, cache_key_fn=_phase_cache_key(phase),
        retries=int(os.environ.get("IRSFLOW_TASK_RETRIES", "3")),
        retry_delay_seconds=exponential_backoff(backoff_factor=float(os.environ.get("IRSFLOW_RETRY_BACKOFF_S", "10"))),
        retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient,
    )


def secret(env: str, block: str) -> str | None:
    """From the environment, else the Prefect Secret block of that name (None if neither)."""
    if os.environ.get(env):
        return os.environ[env]
    from prefect.blocks.system import Secret

    try:
        return Secret.load(block).get()
    except ValueError:  # no such block
        return None


TEACHER_KEY_BLOCK = "teacher-api-key"


def teacher_key() -> str | None:
    """The teacher's API key: $IRSFLOW_TEACHER_API_KEY, $DEEPSEEK_API_KEY, else the Secret block
    ``teacher-api-key``; fetched inside the task so it is never a parameter or a log line."""
    from irsflow.teacher.settings import KEY_ENV, key_from_env

    return key_from_env() or secret(KEY_ENV[-1], TEACHER_KEY_BLOCK)


def require_teacher_key() -> str:
    from irsflow.errors import ConfigError
    from irsflow.teacher.settings import KEY_ENV

    key = teacher_key()
    if not key:
        raise ConfigError(f"teacher.api_key: not set (export {' or '.join(KEY_ENV)}, "
                          f"or create the Prefect Secret block {TEACHER_KEY_BLOCK!r})")
    return key


@task(name="track-job", tags=[CPU_TAG], retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient)
def track_job(job_id: str) -> str:
    """The finished job as an MLflow run (irsflow.release.registry); its id lands in status.json."""
    from irsflow.release.registry import Registry

    return Registry().log_job(open_job(job_id))
