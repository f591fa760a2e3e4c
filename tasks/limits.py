"""Task tags and the ``gpu`` tag concurrency limit.

Phase tasks are tagged ``gpu`` (they hold a model) or ``cpu``. The ``gpu`` tag's concurrency limit
keeps one model resident across every job on a server (``IRSFLOW_GPU_SLOTS``, default 1).
"""

from __future__ import annotations

import logging
import os

from prefect import get_client
from prefect.exceptions import ObjectNotFound

GPU_TAG = "gpu"
CPU_TAG = "cpu"
log = logging.getLogger("irsflow.prefect")


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
