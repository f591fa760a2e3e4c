"""Codebook files: export the rules as of a version, and merge such a file back in.

    export_rules(Codebook(), "rules.jsonl")                      # one rule per line
    export_rules(Codebook(), "rules.json", fmt="json")           # one object: version, content hash, rules
    changed = import_rules(Codebook("other.sqlite"), "rules.jsonl", author="ops")

``Codebook.export`` and ``Codebook.import_`` call these. An import is all or nothing: every row is
checked first, then the merge is one write transaction (``Codebook.merge``).
CLI: ``irsflow codebook export|import`` (cli/codebook.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from irsflow.codebook.store import RULE_ID, Codebook, Rule, check_rule, clean_terms
from irsflow.errors import InputError
from irsflow.store import atomic_write_text, jsonl_lines, utc_now

EXPORT_FORMAT = "irsflow-codebook/1"


def export_rules(cb: Codebook, path: str | Path, fmt: str = "jsonl", version: int | None = None) -> Path:
    """Write every rule (enabled or not) as of ``version``: ``jsonl`` one rule per line, or ``json``
    one object with the version and content hash. Written atomically."""
    snap, path = cb.snapshot(version), Path(path)
    rules = [r.to_dict() for r in snap.rules]
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rules)
    elif fmt == "json":
        text = (
            json.dumps(
                {
                    "format": EXPORT_FORMAT,
                    "version": snap.version,
                    "content_hash": snap.content_hash(),
                    "exported_at": utc_now(),
                    "rules": rules,
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
    else:
        raise InputError(f"format: {fmt!r} is not one of jsonl, json")
    atomic_write_text(path, text)
    return path


def import_rules(cb: Codebook, path: str | Path, author: str | None = None) -> list[Rule]:
    """Merge an export: unknown ids are added, known ids whose text, scope or enabled flag differ get
    a new version, identical ones are skipped (importing twice changes nothing); a rule without an
    ``enabled`` field comes in disabled, awaiting review. All or nothing."""
    return cb.merge([_rule(where, d) for where, d in read_export(Path(path))], author=author)


def _rule(where: str, d: dict) -> Rule:
    kw, ex = (
        clean_terms(d.get("keywords"), f"{where}: keywords", True),
        clean_terms(d.get("examples"), f"{where}: examples", False),
    )
    try:
        text = check_rule(d.get("text"), kw, ex)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    rid = d.get("id")
    if not isinstance(rid, str) or not RULE_ID.match(rid):
        raise InputError(f"{where}: id: {rid!r} is not a valid rule id")
    return Rule(
        id=rid,
        text=text,
        keywords=kw,
        examples=ex,
        enabled=bool(d.get("enabled", False)),
        source=d.get("source"),
        provenance=dict(d.get("provenance") or {}),
        author=d.get("author"),
        note=d.get("note"),
        created_at=d.get("created_at") or utc_now(),
    )


def read_export(path: Path) -> list[tuple[str, dict]]:
    """The rows of an export (a ``json`` object's ``rules`` or ``jsonl`` lines), each with where it
    came from (``file:line`` or ``file: rules[i]``) for error messages."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "rules" in whole:
        items = [(f"{path}: rules[{i}]", r) for i, r in enumerate(whole["rules"])]
    else:
        items = []
        for n, line in jsonl_lines(text):
            if line.strip():
                try:
                    items.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{n}: not valid JSON: {err.msg}") from None
    for where, d in items:
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a rule object, got {type(d).__name__}")
    return items
