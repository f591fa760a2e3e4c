"""What a job shows in the Prefect UI: a live progress bar, a table with one row per round,
and a markdown artifact with the reward/weight trend chart. The same chart is saved in the job
dir (``charts/trends.png``). Publishing never fails a phase: the UI is a view, the job dir is the truth."""

from __future__ import annotations

import logging
import re
import time

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from irsflow.jobs.charts import trend_chart_png, trends_markdown
from irsflow.loop import PHASES
from irsflow.store import JobStore, ProgressFn, atomic_write_bytes

log = logging.getLogger("irsflow.prefect")


def safe_key(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())


def artifact_key(job_id: str, what: str) -> str:
    """``job-<job id>-<what>``: one key per job and view, whatever the job's stage."""
    return safe_key(f"job-{job_id}-{what}")


def start_progress(store: JobStore) -> str | None:
    try:
        art_id = create_progress_artifact(
            progress=0.0,
            key=artifact_key(store.job_id, "progress"),
            description=f"job {store.job_id}: share of all phases done",
        )
    except Exception as err:  # noqa: BLE001 - see module docstring
        log.warning("could not create the progress artifact: %s", err)
        return None
    store.update_status(progress_artifact_id=str(art_id))
    return str(art_id)


def job_progress(iteration: int, phase: str, pct: float, n_iterations: int, phases=PHASES) -> float:
    """Overall percentage of a job, counting each phase of each round as one equal step."""
    done = (iteration - 1) * len(phases) + phases.index(phase) + min(max(pct, 0.0), 100.0) / 100.0
    return round(100.0 * done / (len(phases) * n_iterations), 1)


def progress_updater(
    store: JobStore, iteration: int, phase: str, n_iterations: int, phases=PHASES, min_interval_s: float = 1.0
) -> ProgressFn:
    """A phase progress callback that moves the job's progress artifact (throttled: one API call
    per second at most, plus the phase's end)."""
    art_id = store.read_status().get("progress_artifact_id")
    last = [0.0]

    def update(pct: float) -> None:
        now = time.monotonic()
        if art_id is None or (pct < 100 and now - last[0] < min_interval_s):
            return
        last[0] = now
        try:
            update_progress_artifact(
                artifact_id=art_id, progress=job_progress(iteration, phase, pct, n_iterations, phases)
            )
        except Exception as err:  # noqa: BLE001
            log.debug("progress update failed: %s", err)

    return update


def publish_iterations(store: JobStore, rows: list[dict]) -> None:
    """The per-round table and the trend chart (markdown + PNG in the job dir)."""
    if not rows:
        return
    png = trend_chart_png(rows, title=f"job {store.job_id}")
    atomic_write_bytes(store.dir / "charts" / "trends.png", png)
    try:
        create_table_artifact(
            table=rows,
            key=artifact_key(store.job_id, "iterations"),
            description=f"job {store.job_id}: one row per round",
        )
        create_markdown_artifact(
            markdown=trends_markdown(store.job_id, rows, png),
            key=artifact_key(store.job_id, "trends"),
            description=f"job {store.job_id}: reward and weight trends",
        )
    except Exception as err:  # noqa: BLE001
        log.warning("could not publish the iteration artifacts: %s", err)
