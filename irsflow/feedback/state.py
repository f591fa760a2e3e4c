"""Incremental extraction state: how far feedback has been fully extracted, and which recent
feedback ids were already handed out (so overlapping windows do not hand them out twice).

    state = load_state(path)                          # a fresh ExtractState when the file is missing
    frm, to = plan_window(state, now, settings)       # [watermark - overlap, now)
    ...
    save_state(path, new_state)                       # atomic; only after the run's outputs are written

Langfuse's read API lags ingestion by minutes, so every window starts ``overlap_minutes`` before
the previous watermark: feedback that became visible late is still found, and ``recent_ids``
(ids seen inside that overlap, with their timestamps) stops feedback seen last time from being
extracted again. ``recent_ids`` is pruned to the overlap, so the state file stays small.
``api_version`` remembers which Langfuse read API answered (``api_version="auto"`` starts there
next time, so a retired route is not asked again run after run).

The watermark is the window's end, and moves only when the run read every score page to the end
(short or empty pages are not the end; see ``langfuse_v3``/``langfuse_v4``) and its outputs were
written: no score older than the watermark is left unread except by the server's read lag, which
the overlap covers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from irsflow.errors import InputError
from irsflow.store import atomic_write_json

if TYPE_CHECKING:
    from irsflow.feedback.langfuse import LangfuseSettings


def as_utc(t: datetime) -> datetime:
    """Aware UTC; a naive time is taken to be UTC already."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class ExtractState(BaseModel):
    """JSON-able state carried between extraction runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    watermark: datetime | None = Field(
        None, description="feedback with a timestamp before this was fully extracted (None: nothing yet)"
    )
    recent_ids: dict[str, datetime] = Field(
        default_factory=dict, description="score id -> score timestamp, for ids in [watermark - overlap, watermark)"
    )
    api_version: Literal["v3", "v4"] | None = Field(
        None, description="the Langfuse read API that answered the last run (None: not known yet)"
    )


def plan_window(state: ExtractState, now: datetime, settings: LangfuseSettings) -> tuple[datetime | None, datetime]:
    """The next window ``[from, to)``: from = watermark - overlap (no watermark: ``settings.start``,
    None meaning from the beginning), to = now. The watermark never moves backwards, even if the
    clock does."""
    to = as_utc(now)
    if state.watermark is None:
        return (as_utc(settings.start) if settings.start else None), to
    watermark = as_utc(state.watermark)
    return watermark - timedelta(minutes=settings.overlap_minutes), max(to, watermark)


def load_state(path: str | Path) -> ExtractState:
    path = Path(path)
    if not path.exists():
        return ExtractState()
    try:
        return ExtractState.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
        raise InputError(
            f"extract state {path}: unreadable ({type(e).__name__}: {str(e)[:300]}); "
            "fix or delete it (deleting re-extracts from settings.start)"
        ) from None


def save_state(path: str | Path, state: ExtractState) -> None:
    atomic_write_json(Path(path), state.model_dump(mode="json"))
