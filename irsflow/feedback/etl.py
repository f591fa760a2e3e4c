"""One feedback ETL run: Langfuse thumbs -> SFT rows, preference pairs, an annotation queue, and
(when a Label Studio export is given) golden rows from human corrections plus draft codebook rules.

    manifest = run_etl(FeedbackSettings(), run_id="r1")        # keys from LANGFUSE_* env vars
    manifest = run_etl(settings, "r2", keys=("pk", "sk"), label_studio_export="export.json")

Outputs go to ``<data dir>/feedback/<run id>/`` (see ``outputs.py``), written into a temporary
folder renamed into place whole; only then is the watermark (``<data dir>/feedback/state.json``)
moved. A crash before the rename leaves nothing and the rerun re-extracts the same window; a
crash between rename and watermark is healed at the next start from the manifest's
``state_after`` (so nothing is written twice). A run that finds nothing new writes no folder.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irsflow.errors import InputError
from irsflow.feedback.label_studio import read_export
from irsflow.feedback.langfuse import Extraction, LangfuseSettings
from irsflow.feedback.outputs import RunOutputs
from irsflow.feedback.state import ExtractState, load_state, save_state
from irsflow.feedback.transform import TransformSettings
from irsflow.store import atomic_dir, atomic_write_json, data_dir, utc_now

log = logging.getLogger("irsflow.feedback")
SECRET_FIELDS = {"public_key", "secret_key"}


class FeedbackSettings(BaseModel):
    """What a feedback ETL run does (no secrets here: keys come from the environment or a Secret block)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    langfuse: dict[str, Any] = Field(default_factory=dict, description=(
        "LangfuseSettings options other than the keys: host, score_name, up_values, down_values, "
        "overlap_minutes, start, page_size, ... (host defaults to env LANGFUSE_HOST)"))
    transform: TransformSettings = TransformSettings()
    codebook_drafts: bool = Field(True, description="turn each human correction into a disabled draft codebook rule")

    @field_validator("langfuse")
    @classmethod
    def _no_secrets(cls, v: dict) -> dict:
        if SECRET_FIELDS & set(v):
            raise ValueError("keys do not belong in settings: set LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY "
                             "or the Prefect Secret blocks")
        unknown = set(v) - set(LangfuseSettings.model_fields)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}")
        return v


class _NothingNew(Exception):
    pass


def feedback_dir() -> Path:
    return data_dir() / "feedback"


def state_path() -> Path:
    return feedback_dir() / "state.json"


def langfuse_settings(settings: FeedbackSettings, keys: tuple[str, str] | None = None) -> LangfuseSettings:
    extra = {"public_key": keys[0], "secret_key": keys[1]} if keys else {}
    return LangfuseSettings.from_env(**settings.langfuse, **extra)


def _heal_uncommitted() -> ExtractState:
    """The state after the newest run whose outputs landed but whose watermark was not saved."""
    state = load_state(state_path())
    for manifest in sorted(feedback_dir().glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        after = ExtractState.model_validate(read_manifest(manifest.parent)["state_after"])
        if after.watermark and (state.watermark is None or after.watermark > state.watermark):
            log.warning("feedback run %s wrote its outputs but not its watermark: taking it now", manifest.parent.name)
            save_state(state_path(), after)
            state = after
    return state


def read_manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))


def run_etl(settings: FeedbackSettings, run_id: str, keys: tuple[str, str] | None = None,
            label_studio_export: str | Path | None = None, now: datetime | None = None) -> dict:
    lf = langfuse_settings(settings, keys)  # bad settings fail here, before any request
    run_dir = feedback_dir() / run_id
    if (run_dir / "manifest.json").exists():
        log.info("feedback run %s already finished: nothing to do", run_id)
        _draft_rules(run_dir, settings)  # in case the run stopped between its outputs and its drafts
        return {**read_manifest(run_dir), "written": False}
    state = _heal_uncommitted()
    started = utc_now()
    try:
        with Extraction(lf, state, now=now or datetime.now(timezone.utc)) as ext, atomic_dir(run_dir) as tmp:
            outs = RunOutputs(tmp, settings.transform)
            for record in ext:
                outs.add(record)
            if label_studio_export:
                try:
                    golden, pairs, skipped = read_export(label_studio_export)
                except InputError as err:  # a broken export is counted, the thumbs of this run still land
                    golden, pairs, skipped = [], [], Counter({f"broken export file: {err}": 1})
                outs.add_corrections(golden, pairs, skipped)
            files = outs.close()
            new_state = ext.next_state()
            manifest = {
                "run_id": run_id, "started_at": started, "finished_at": utc_now(),
                "window": [None if t is None else t.isoformat() for t in ext.window],
                "extract": {k: v for k, v in ext.stats.items()}, "counts": dict(outs.counts),
                "skipped": dict(outs.skipped), "files": files,
                "settings": settings.model_dump(mode="json"), "host": lf.host,
                "state_before": state.model_dump(mode="json"), "state_after": new_state.model_dump(mode="json"),
            }
            nothing_new = not any(f["rows"] for f in files.values())
            if nothing_new:
                raise _NothingNew  # atomic_dir drops its temp folder: a run that found nothing leaves none
            atomic_write_json(tmp / "manifest.json", manifest)
    except _NothingNew:
        pass
    manifest["codebook_drafts"] = 0 if nothing_new else _draft_rules(run_dir, settings)
    save_state(state_path(), new_state)  # only now: the outputs (and drafts made from them) are in place
    log.info("feedback run %s: %d records, %s; skipped %s", run_id, outs.counts["records"],
             {k: v["rows"] for k, v in files.items() if v["rows"]}, dict(outs.skipped) or "nothing")
    return {**manifest, "written": not nothing_new}


def _draft_rules(run_dir: Path, settings: FeedbackSettings) -> int:
    """Each changed human correction of the run becomes a disabled draft codebook rule for a reviewer
    (seed 002 option A). Rule ids come from the Label Studio annotation, so a rerun adds none twice."""
    from irsflow.codebook import Codebook, rule_from_correction
    from irsflow.store import read_jsonl

    pairs = [p for p in read_jsonl(run_dir / "pairs.jsonl") if p.get("source") == "label-studio"]
    if not settings.codebook_drafts or not pairs:
        return 0
    book, n = Codebook(), 0
    known = {r.id for r in book.rules(enabled_only=False)}
    for pair in pairs:
        rule_id = f"ls-{pair.get('ls_task_id')}-{pair.get('ls_annotation_id')}"
        question = next((m["content"] for m in reversed(pair["prompt"]) if m["role"] == "user"), None)
        if rule_id in known or not question:
            continue
        d = rule_from_correction(question, pair["rejected"], pair["chosen"],
                                 provenance={"trace_id": pair.get("trace_id"), "ls_task_id": pair.get("ls_task_id")})
        book.add(d.text, d.keywords, d.examples, source=d.source, author=d.author, provenance=d.provenance,
                 enabled=False, note=d.note, rule_id=rule_id)
        n += 1
    return n
