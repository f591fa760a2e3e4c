"""Each Label Studio correction taken once, and only its latest version kept, across ETL runs.

    <data dir>/label-studio/corrections/     replaced whole (atomic_dir) when a run took corrections
        state.json             {"ingested": {annotation id: {"updated_at", "task_id", "digest", "run_id", "at"}}}
        golden.messages.jsonl  one golden SFT row per annotation: its latest version
        pairs.jsonl            one preference pair per annotation: its latest version

Label Studio's exports are cumulative: every pull returns every task again. An ETL run keeps the
corrections whose (annotation id, ``updated_at``) it has not taken yet (``select``): new ones, and
ones edited since. It writes them into its run folder with the run's manifest
(``label_studio.ingested``), then merges them here (``merge_run``), where an edited annotation's
golden row and pair replace the old ones. The state lives in the same folder as those rows and is
swapped with them in one rename; a crash between the run folder and this merge is healed at the
next start by merging every run folder again (idempotent: an entry replaces another only when its
run finished later). Draft codebook rules follow the merged pairs (``sync_drafts``): one disabled
rule per annotation, id ``ls-<task>-<annotation>``, re-drafted (and disabled for a new review) when
the annotation was edited.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from irsflow.store import atomic_dir, atomic_write_json, data_dir, read_jsonl, write_jsonl

log = logging.getLogger("irsflow.feedback")
REDRAFT_NOTE = "re-drafted: the correction was edited in Label Studio; review before enabling"


def store_dir() -> Path:
    return data_dir() / "label-studio" / "corrections"


def exports_dir() -> Path:
    return data_dir() / "label-studio" / "exports"


def load_ingested() -> dict[str, dict]:
    path = store_dir() / "state.json"
    return json.loads(path.read_text(encoding="utf-8"))["ingested"] if path.exists() else {}


def digest(c: dict) -> str:
    """What a correction says (answer and correction), to tell an edit from a re-submit unchanged."""
    return hashlib.sha256(f"{c['original']}\0{c['corrected']}".encode()).hexdigest()[:16]


def entry(c: dict) -> dict:
    """The state entry of a correction, as a run's manifest records it."""
    return {"updated_at": c["ls_updated_at"], "task_id": c["ls_task_id"], "digest": digest(c)}


def select(corrections: list[dict], ingested: dict[str, dict]) -> tuple[list[dict], dict[str, str], int]:
    """(corrections to take, {annotation id: run that holds its older version}, how many were taken
    already). An annotation is taken again only when its ``updated_at`` changed and its text with it
    (an annotation re-submitted unchanged gets a new ``updated_at`` and is not taken twice)."""
    fresh, replaces, already = [], {}, 0
    for c in corrections:
        seen = ingested.get(c["ls_annotation_id"])
        if seen and (seen.get("updated_at") == c["ls_updated_at"] or seen.get("digest") == digest(c)):
            already += 1
            continue
        if seen:
            replaces[c["ls_annotation_id"]] = seen.get("run_id")
        fresh.append(c)
    return fresh, replaces, already


def _ls_rows(path: Path, take: dict[str, dict]) -> list[dict]:
    return [r for r in read_jsonl(path) if r.get("source") == "label-studio"
            and r.get("ls_annotation_id") in take and r.get("ls_updated_at") == take[r["ls_annotation_id"]]["updated_at"]]


def merge_run(run_dir: Path, manifest: dict) -> int:
    """Merge a finished run's corrections into the store; returns how many entries it took (0 when
    the store already has them or later versions)."""
    entries = (manifest.get("label_studio") or {}).get("ingested") or {}
    if not entries:
        return 0
    state = load_ingested()
    at = manifest["finished_at"]
    take = {a: e for a, e in entries.items() if a not in state or state[a]["at"] < at}
    if not take:
        return 0
    old = store_dir()
    golden = [r for r in read_jsonl(old / "golden.messages.jsonl") if r.get("ls_annotation_id") not in take]
    pairs = [r for r in read_jsonl(old / "pairs.jsonl") if r.get("ls_annotation_id") not in take]
    golden += _ls_rows(run_dir / "golden.messages.jsonl", take)
    pairs += _ls_rows(run_dir / "pairs.jsonl", take)
    state.update({a: {**e, "run_id": manifest["run_id"], "at": at} for a, e in take.items()})
    with atomic_dir(old) as tmp:  # rows and state change together
        write_jsonl(tmp / "golden.messages.jsonl", golden)
        write_jsonl(tmp / "pairs.jsonl", pairs)
        atomic_write_json(tmp / "state.json", {"ingested": state})
    log.info("label studio corrections: took %d from run %s (%d in the store)", len(take), manifest["run_id"], len(golden))
    return len(take)


def rule_id(pair: dict) -> str:
    return f"ls-{pair.get('ls_task_id')}-{pair['ls_annotation_id']}"


def _question(pair: dict) -> str | None:
    return next((m["content"] for m in reversed(pair["prompt"]) if m.get("role") == "user" and m.get("content")), None)


def draft(pair: dict):
    """The draft rule of one correction pair (None without a user question); raises InputError on a
    correction that teaches nothing, so a run checks its drafts before its folder lands."""
    from irsflow.codebook import rule_from_correction

    question = _question(pair)
    if not question:
        return None
    prov = {k: pair.get(k) for k in ("trace_id", "ls_task_id", "ls_annotation_id", "ls_updated_at")}
    return rule_from_correction(question, pair["rejected"], pair["chosen"], provenance=prov,
                                author=None if pair.get("annotator") is None else f"label-studio:{pair['annotator']}")


def check_drafts(pairs: list[dict]) -> int:
    """Open the codebook (a broken file fails here) and build each draft, before anything lands."""
    from irsflow.codebook import Codebook

    if pairs:
        Codebook()
    return sum(draft(p) is not None for p in pairs)


def sync_drafts() -> int:
    """Make the codebook hold one draft per stored correction: add the missing ones, re-draft the
    ones whose annotation was edited since. Returns how many rules were added or re-drafted."""
    from irsflow.codebook import Codebook

    pairs = read_jsonl(store_dir() / "pairs.jsonl")
    if not pairs:
        return 0
    book = Codebook()
    rules = {r.id: r for r in book.rules(enabled_only=False)}
    n = 0
    for pair in pairs:
        rid, old = rule_id(pair), rules.get(rule_id(pair))
        # a rule made before updated_at was recorded has no ls_updated_at: left as it is
        if old is not None and old.provenance.get("ls_updated_at", pair["ls_updated_at"]) == pair["ls_updated_at"]:
            continue
        d = draft(pair)
        if d is None:
            continue
        if old is None:
            book.add(d.text, d.keywords, d.examples, source=d.source, author=d.author, provenance=d.provenance,
                     enabled=False, note=d.note, rule_id=rid)
        else:
            book.edit(rid, text=d.text, keywords=d.keywords, examples=d.examples, provenance=d.provenance,
                      note=REDRAFT_NOTE, author=d.author)
            if old.enabled:
                book.set_enabled(rid, False, note=REDRAFT_NOTE, author=d.author)
        n += 1
    return n
