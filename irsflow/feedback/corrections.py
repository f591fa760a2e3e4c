"""Each Label Studio correction taken once, and only its latest version kept, across ETL runs.

    <data dir>/label-studio/corrections/     replaced whole (atomic_dir) when a run took corrections
        state.json             {"ingested": {task id: {"annotation_id", "updated_at", "task_id", "digest",
                                                   "run_id", "at"}}}
        golden.messages.jsonl  one golden SFT row per task: its latest correction
        pairs.jsonl            one preference pair per task: its latest correction

A task (one rejected answer of one trace) holds at most one correction: the latest annotation of
the task by ``updated_at`` (``label_studio.read_export``), whoever made it. Label Studio's exports
are cumulative: every pull returns every task again. An ETL run keeps the corrections whose
(task, annotation id, ``updated_at``) it has not taken yet (``select``): new tasks, annotations
edited since, and a newer annotation of a task already corrected (a second annotator, or a new
annotation instead of an edit). It writes them into its run folder with the run's manifest
(``label_studio.ingested``), then merges them here (``merge_run``), where a task's new correction
replaces its old golden row and pair. The state lives in the same folder as those rows and is
swapped with them in one rename; a crash between the run folder and this merge is healed at the
next start by merging every run folder again (idempotent: an entry replaces another only when its
run finished later). Draft codebook rules follow the merged pairs (``sync_drafts``): one disabled
rule per task, id ``ls-<task>``, re-drafted (and disabled for a new review) when the task's
correction changed (an edit or a newer annotation).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from irsflow.dataset import last_user_turn
from irsflow.store import atomic_dir, atomic_write_json, data_dir, read_jsonl, write_jsonl

log = logging.getLogger("irsflow.feedback")
REDRAFT_NOTE = "re-drafted: the correction was edited in Label Studio; review before enabling"


def store_dir() -> Path:
    return data_dir() / "label-studio" / "corrections"


def exports_dir() -> Path:
    return data_dir() / "label-studio" / "exports"


def _by_task(entries: dict[str, dict]) -> dict[str, dict]:
    """Entries keyed by task id (older states and manifests keyed them by annotation id: each entry
    names its task, and of two entries of one task the later one wins)."""
    out: dict[str, dict] = {}
    for key, e in entries.items():
        task = str(e["task_id"])
        e = {"annotation_id": key if task != key else None, **e}
        if task not in out or (out[task].get("at") or "", out[task].get("updated_at") or "") <= (
            e.get("at") or "",
            e.get("updated_at") or "",
        ):
            out[task] = e
    return out


def load_ingested() -> dict[str, dict]:
    path = store_dir() / "state.json"
    return _by_task(json.loads(path.read_text(encoding="utf-8"))["ingested"]) if path.exists() else {}


def digest(c: dict) -> str:
    """What a correction says (answer and correction), to tell an edit from a re-submit unchanged."""
    return hashlib.sha256(f"{c['original']}\0{c['corrected']}".encode()).hexdigest()[:16]


def task_key(c: dict) -> str:
    """What a correction is stored under: its Label Studio task."""
    return str(c["ls_task_id"])


def entry(c: dict) -> dict:
    """The state entry of a correction, as a run's manifest records it (keyed by :func:`task_key`)."""
    return {
        "annotation_id": c["ls_annotation_id"],
        "updated_at": c["ls_updated_at"],
        "task_id": c["ls_task_id"],
        "digest": digest(c),
    }


def select(corrections: list[dict], ingested: dict[str, dict]) -> tuple[list[dict], dict[str, str], int]:
    """(corrections to take, {task id: run that holds its older correction}, how many were taken
    already). A task is taken again only when its latest annotation changed (another annotation, or
    a newer ``updated_at``) and the correction's text with it (an annotation re-submitted unchanged
    gets a new ``updated_at`` and is not taken twice)."""
    fresh, replaces, already = [], {}, 0
    for c in corrections:
        seen = ingested.get(task_key(c))
        if seen and (
            (
                seen.get("annotation_id") in (None, c["ls_annotation_id"])
                and seen.get("updated_at") == c["ls_updated_at"]
            )
            or seen.get("digest") == digest(c)
        ):
            already += 1
            continue
        if seen:
            replaces[task_key(c)] = seen.get("run_id")
        fresh.append(c)
    return fresh, replaces, already


def _ls_rows(path: Path, take: dict[str, dict]) -> list[dict]:
    return [
        r
        for r in read_jsonl(path)
        if r.get("source") == "label-studio"
        and str(r.get("ls_task_id")) in take
        and r.get("ls_updated_at") == take[str(r["ls_task_id"])]["updated_at"]
        and r.get("ls_annotation_id") in (None, take[str(r["ls_task_id"])]["annotation_id"])
    ]


def merge_run(run_dir: Path, manifest: dict) -> int:
    """Merge a finished run's corrections into the store; returns how many entries it took (0 when
    the store already has them or later versions)."""
    entries = _by_task((manifest.get("label_studio") or {}).get("ingested") or {})
    if not entries:
        return 0
    state = load_ingested()
    at = manifest["finished_at"]
    take = {a: e for a, e in entries.items() if a not in state or state[a]["at"] < at}
    if not take:
        return 0
    old = store_dir()
    golden = [r for r in read_jsonl(old / "golden.messages.jsonl") if str(r.get("ls_task_id")) not in take]
    pairs = [r for r in read_jsonl(old / "pairs.jsonl") if str(r.get("ls_task_id")) not in take]
    golden += _ls_rows(run_dir / "golden.messages.jsonl", take)
    pairs += _ls_rows(run_dir / "pairs.jsonl", take)
    state.update({a: {**e, "run_id": manifest["run_id"], "at": at} for a, e in take.items()})
    with atomic_dir(old) as tmp:  # rows and state change together
        write_jsonl(tmp / "golden.messages.jsonl", golden)
        write_jsonl(tmp / "pairs.jsonl", pairs)
        atomic_write_json(tmp / "state.json", {"ingested": state})
    log.info(
        "label studio corrections: took %d from run %s (%d in the store)", len(take), manifest["run_id"], len(golden)
    )
    return len(take)


def rule_id(pair: dict) -> str:
    return f"ls-{pair['ls_task_id']}"


def draft(pair: dict):
    """The draft rule of one correction pair (None without a user question); raises InputError on a
    correction that teaches nothing, so a run checks its drafts before its folder lands."""
    from irsflow.codebook.drafts import rule_from_correction

    question = last_user_turn(pair["prompt"])
    if not question:
        return None
    prov = {k: pair.get(k) for k in ("trace_id", "ls_task_id", "ls_annotation_id", "ls_updated_at")}
    return rule_from_correction(
        question,
        pair["rejected"],
        pair["chosen"],
        provenance=prov,
        author=None if pair.get("annotator") is None else f"label-studio:{pair['annotator']}",
    )


def check_drafts(pairs: list[dict]) -> int:
    """Open the codebook (a broken file fails here) and build each draft, before anything lands."""
    from irsflow.codebook.store import Codebook

    if pairs:
        Codebook()
    return sum(draft(p) is not None for p in pairs)


def sync_drafts() -> int:
    """Make the codebook hold one draft per stored correction (per task): add the missing ones,
    re-draft the ones whose correction changed since (an edit, or a newer annotation of the task).
    Returns how many rules were added or re-drafted."""
    from irsflow.codebook.store import Codebook

    pairs = read_jsonl(store_dir() / "pairs.jsonl")
    if not pairs:
        return 0
    book = Codebook()
    rules = {r.id: r for r in book.rules(enabled_only=False)}
    n = 0
    for pair in pairs:
        rid, old = rule_id(pair), rules.get(rule_id(pair))
        if old is not None and all(old.provenance.get(k) == pair[k] for k in ("ls_annotation_id", "ls_updated_at")):
            continue
        d = draft(pair)
        if d is None:
            continue
        if old is None:
            book.add(
                d.text,
                d.keywords,
                d.examples,
                source=d.source,
                author=d.author,
                provenance=d.provenance,
                enabled=False,
                note=d.note,
                rule_id=rid,
            )
        else:
            book.edit(
                rid,
                text=d.text,
                keywords=d.keywords,
                examples=d.examples,
                provenance=d.provenance,
                note=REDRAFT_NOTE,
                author=d.author,
            )
            if old.enabled:
                book.set_enabled(rid, False, note=REDRAFT_NOTE, author=d.author)
        n += 1
    return n
