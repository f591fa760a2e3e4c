"""One feedback ETL run: Langfuse thumbs -> SFT rows, preference pairs, an annotation queue, and
(when a Label Studio export is given) golden rows from human corrections plus draft codebook rules.

    manifest = run_etl(FeedbackSettings(), run_id="r1")        # keys from LANGFUSE_* env vars
    manifest = run_etl(settings, "r2", keys=("pk", "sk"), label_studio_export="export.json")

Outputs go to ``<data dir>/feedback/<run id>/`` (see ``outputs.py``), written into a temporary
folder renamed into place whole; only then is the watermark (``<data dir>/feedback/state.json``)
moved. A crash before the rename leaves nothing and the rerun re-extracts the same window; a
crash between rename and watermark is healed at the next start from the manifest's
``state_after`` (so nothing is written twice). A run that finds nothing new writes no folder.
Label Studio exports are cumulative: a run takes only corrections it has not taken yet, or edited
since, and the store of corrections (``corrections.py``) keeps one version of each. The export is
read and checked, and the codebook opened and each draft built, before anything is written, so a
bad export or codebook fails the run with no folder left behind.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irsflow.feedback import corrections as ls_store
from irsflow.feedback.label_studio import golden_row, pair_row, read_export
from irsflow.feedback.label_studio_api import LabelStudioSettings
from irsflow.feedback.langfuse import Extraction, LangfuseSettings
from irsflow.feedback.outputs import RunOutputs
from irsflow.feedback.state import ExtractState, load_state, save_state
from irsflow.feedback.transform import TransformSettings
from irsflow.store import atomic_dir, atomic_write_json, data_dir, utc_now

log = logging.getLogger("irsflow.feedback")
SECRET_FIELDS = {"public_key", "secret_key"}


class FeedbackSettings(BaseModel):
    """What a feedback ETL run does (no secrets here: keys come from the environment or a Secret block)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # a key put here is never echoed
    langfuse: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "LangfuseSettings options other than the keys: host, score_name, up_values, down_values, "
            "overlap_minutes, start, page_size, ... (host defaults to env LANGFUSE_HOST)"
        ),
    )
    transform: TransformSettings = TransformSettings()
    langfuse_enabled: bool = Field(
        True,
        description=(
            "False: no Langfuse extraction, the run takes only Label Studio corrections (a setup without Langfuse)"
        ),
    )
    codebook_drafts: bool = Field(True, description="turn each human correction into a disabled draft codebook rule")
    label_studio: LabelStudioSettings | None = Field(
        None,
        description=(
            "pull this Label Studio project's JSON export before each run (key: env LABEL_STUDIO_API_KEY or "
            "the Prefect Secret block label-studio-api-key); None: only an export file given to the run"
        ),
    )

    @field_validator("langfuse")
    @classmethod
    def _no_secrets(cls, v: dict) -> dict:
        if SECRET_FIELDS & set(v):
            raise ValueError(
                "keys do not belong in settings: set LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY "
                "or the Prefect Secret blocks"
            )
        unknown = set(v) - set(LangfuseSettings.model_fields)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}")
        return v


class _NothingNew(Exception):
    pass


class _NoExtraction:
    """Stands in for ``Extraction`` when Langfuse is off: no records, the state left as it is."""

    def __init__(self, state: ExtractState):
        self.state, self.window, self.stats = state, (None, None), Counter()

    def __enter__(self) -> _NoExtraction:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __iter__(self):
        return iter(())

    def next_state(self) -> ExtractState:
        return self.state


def feedback_dir() -> Path:
    return data_dir() / "feedback"


def state_path() -> Path:
    return feedback_dir() / "state.json"


def langfuse_settings(settings: FeedbackSettings, keys: tuple[str, str] | None = None) -> LangfuseSettings:
    extra = {"public_key": keys[0], "secret_key": keys[1]} if keys else {}
    return LangfuseSettings.from_env(**settings.langfuse, **extra)


def _heal_uncommitted() -> ExtractState:
    """The state after the newest run whose outputs landed but whose watermark was not saved; the
    corrections of any such run merged into the store (``corrections.merge_run`` is idempotent)."""
    state = load_state(state_path())
    for manifest in sorted(feedback_dir().glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        doc = read_manifest(manifest.parent)
        ls_store.merge_run(manifest.parent, doc)
        after = ExtractState.model_validate(doc["state_after"])
        if after.watermark and (state.watermark is None or after.watermark > state.watermark):
            log.warning("feedback run %s wrote its outputs but not its watermark: taking it now", manifest.parent.name)
            save_state(state_path(), after)
            state = after
    return state


def read_manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))


def run_etl(
    settings: FeedbackSettings,
    run_id: str,
    keys: tuple[str, str] | None = None,
    label_studio_export: str | Path | None = None,
    now: datetime | None = None,
    skip_langfuse: str | None = None,
) -> dict:
    """One run (see the module docstring). ``skip_langfuse``: why Langfuse is not read this time
    (the weekly cycle without Langfuse host/keys), recorded in the manifest as ``langfuse_skipped``."""
    if not settings.langfuse_enabled and not skip_langfuse:
        skip_langfuse = "feedback.langfuse_enabled is false"
    lf = None if skip_langfuse else langfuse_settings(settings, keys)  # bad settings fail here
    run_dir = feedback_dir() / run_id
    if (run_dir / "manifest.json").exists():
        log.info("feedback run %s already finished: nothing to do", run_id)
        ls_store.merge_run(run_dir, read_manifest(run_dir))  # in case it stopped before its merge and drafts
        _draft_rules(settings)
        return {**read_manifest(run_dir), "written": False}
    # a bad export fails here, naming its format, before any request
    found, ls_skipped = read_export(label_studio_export) if label_studio_export else ([], Counter())
    state = _heal_uncommitted()
    fresh, replaces, already = ls_store.select(found, ls_store.load_ingested())
    if already:
        ls_skipped["already taken (not edited since)"] += already
    started = utc_now()
    try:
        extraction = Extraction(lf, state, now=now or datetime.now(UTC)) if lf else _NoExtraction(state)
        with extraction as ext, atomic_dir(run_dir) as tmp:
            outs = RunOutputs(tmp, settings.transform)
            for record in ext:
                outs.add(record)
            pairs = [pair_row(c) for c in fresh]
            if label_studio_export:
                outs.add_corrections([golden_row(c) for c in fresh], pairs, ls_skipped)
            if settings.codebook_drafts:
                ls_store.check_drafts(pairs)  # a broken codebook fails now, while nothing has landed
            files = outs.close()
            new_state = ext.next_state()
            manifest = {
                "run_id": run_id,
                "started_at": started,
                "finished_at": utc_now(),
                "window": [None if t is None else t.isoformat() for t in ext.window],
                "extract": {k: v for k, v in ext.stats.items()},
                "counts": dict(outs.counts),
                "skipped": dict(outs.skipped),
                "files": files,
                "settings": settings.model_dump(mode="json"),
                "host": lf.host if lf else None,
                "langfuse_skipped": skip_langfuse,
                "state_before": state.model_dump(mode="json"),
                "state_after": new_state.model_dump(mode="json"),
                "label_studio": {
                    "export": None if label_studio_export is None else str(label_studio_export),
                    "ingested": {ls_store.task_key(c): ls_store.entry(c) for c in fresh},
                    "replaces": replaces,
                },
            }
            nothing_new = not any(f["rows"] for f in files.values())
            if nothing_new:
                raise _NothingNew  # atomic_dir drops its temp folder: a run that found nothing leaves none
            atomic_write_json(tmp / "manifest.json", manifest)
    except _NothingNew:
        pass
    if not nothing_new:
        ls_store.merge_run(run_dir, manifest)
    manifest["codebook_drafts"] = _draft_rules(settings)  # also heals drafts a crashed run did not make
    save_state(state_path(), new_state)  # only now: the outputs (and drafts made from them) are in place
    log.info(
        "feedback run %s: %d records, %s; skipped %s",
        run_id,
        outs.counts["records"],
        {k: v["rows"] for k, v in files.items() if v["rows"]},
        dict(outs.skipped) or "nothing",
    )
    return {**manifest, "written": not nothing_new}


def _draft_rules(settings: FeedbackSettings) -> int:
    """Each stored human correction has a disabled draft codebook rule for a reviewer (seed 002
    option A), re-drafted when its annotation was edited; rule ids come from the annotation."""
    return ls_store.sync_drafts() if settings.codebook_drafts else 0
