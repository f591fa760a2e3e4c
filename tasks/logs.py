"""Run logs: the library's ``irsflow.*`` loggers write into the current Prefect run's logs.

Every flow calls ``route_library_logs()`` first, so the UI's run logs and the job's ``train.log``
(through ``JobStore.log_to_file``) tell the same story.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler


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
