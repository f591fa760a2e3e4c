"""The codebook's rules and their versioned store: reviewed human corrections kept as short rules
that are put into prompts, no retraining.

A rule is a one-line instruction plus a scope saying where it applies: example questions (their
MiniLM embeddings define the neighbourhood, see ``irsflow.codebook.retrieval``) and/or keywords.
The store is one SQLite file (default ``<data dir>/codebook.sqlite``) holding an append-only table
of rule versions: every add, edit or enable/disable writes a new immutable row, and that row's
number is the codebook version. ``snapshot(v)`` rebuilds the rules exactly as of version ``v``, so
a training job records (version, ``content_hash()``) and can reproduce its prompts later.

    cb = Codebook()                                    # or Codebook("path/to/codebook.sqlite")
    r = cb.add("Cool a burn under running water, never ice.", keywords=["burn"],
               examples=["What is the first aid for a small burn?"], source="label-studio")
    cb.set_enabled(r.id, False, note="too broad"); cb.version, cb.content_hash()
    cb.add_draft(draft)                                # disabled until reviewed (irsflow.codebook.drafts)
    cb.export("rules.jsonl"); cb.import_("rules.jsonl")   # files: irsflow.codebook.exchange

WAL journaling and ``BEGIN IMMEDIATE`` write transactions let several processes read and write at
once: writers queue on the lock (up to ``timeout`` seconds), readers never block.
CLI: ``irsflow codebook list|add|edit|enable|disable|export|import|history`` (cli/codebook.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from irsflow.errors import InputError
from irsflow.store import data_dir, utc_now

MAX_TEXT = 500  # rules are appended to every matching prompt: keep them to a sentence or two
RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rule_versions (
    version    INTEGER PRIMARY KEY,  -- the codebook version this change created
    rule_id    TEXT NOT NULL,
    action     TEXT NOT NULL,        -- add | edit | enable | disable | note | import
    text       TEXT NOT NULL,
    keywords   TEXT NOT NULL,        -- JSON list
    examples   TEXT NOT NULL,        -- JSON list
    enabled    INTEGER NOT NULL,
    source     TEXT,
    provenance TEXT NOT NULL,        -- JSON object (trace ids, original answers, ...)
    author     TEXT,                 -- who wrote the rule
    note       TEXT,                 -- latest review note
    created_at TEXT NOT NULL,        -- when the rule was first added
    changed_at TEXT NOT NULL,
    changed_by TEXT
);
CREATE INDEX IF NOT EXISTS rule_versions_by_rule ON rule_versions(rule_id, version);
CREATE TRIGGER IF NOT EXISTS rule_versions_no_update BEFORE UPDATE ON rule_versions
    BEGIN SELECT RAISE(ABORT, 'codebook versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS rule_versions_no_delete BEFORE DELETE ON rule_versions
    BEGIN SELECT RAISE(ABORT, 'codebook versions are immutable'); END;
"""


def default_path() -> Path:
    return data_dir() / "codebook.sqlite"


@dataclass(frozen=True)
class Rule:
    """One rule as of codebook version ``version`` (the change that produced this state)."""

    id: str
    text: str
    keywords: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    enabled: bool = True
    source: str | None = None
    provenance: dict = field(default_factory=dict)
    author: str | None = None
    note: str | None = None
    created_at: str = ""
    version: int = 0
    action: str = "add"
    changed_at: str = ""
    changed_by: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keywords"], d["examples"] = list(self.keywords), list(self.examples)
        return d

    def scope(self) -> str:
        parts = [f"kw={','.join(self.keywords)}"] if self.keywords else []
        parts += [f"ex={e!r}" for e in self.examples]
        return " ".join(parts)


@dataclass(frozen=True)
class RuleDraft:
    """A rule proposed from a correction; added disabled until a reviewer enables it."""

    text: str
    keywords: tuple[str, ...]
    examples: tuple[str, ...]
    source: str | None = None
    provenance: dict = field(default_factory=dict)
    author: str | None = None
    note: str | None = "draft from a human correction: review before enabling"


@dataclass(frozen=True)
class Snapshot:
    version: int
    rules: tuple[Rule, ...]  # every rule that existed at ``version``, enabled or not

    @property
    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def content_hash(self) -> str:
        return content_hash(self.enabled)


def content_hash(rules: Iterable[Rule]) -> str:
    """sha256 over what changes prompts: id, text and scope of each rule (order-independent).
    Notes, authors and version numbers are left out, so disabling then re-enabling returns the hash."""
    canon = sorted([r.id, r.text, list(r.keywords), list(r.examples)] for r in rules)
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False).encode()).hexdigest()


def clean_terms(values: Iterable[str] | str | None, name: str, lower: bool) -> tuple[str, ...]:
    """Keywords or example questions as stored: whitespace collapsed, empty and repeated ones dropped,
    lower-cased when ``lower``. ``name`` starts the error message."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]  # a lone string is one keyword, not its characters
    out: list[str] = []
    for v in values:
        if not isinstance(v, str):
            raise InputError(f"{name}: expected strings, got {type(v).__name__}")
        v = " ".join(v.split())
        v = v.lower() if lower else v
        if v and v not in out:
            out.append(v)
    return tuple(out)


def check_rule(text: str, keywords: tuple, examples: tuple, rule_id: str | None = None) -> str:
    """The rule's text as stored (whitespace collapsed), or InputError: empty, too long, or no scope."""
    where = f"rule {rule_id}: " if rule_id else ""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}text: must not be empty")
    text = " ".join(text.split())
    if len(text) > MAX_TEXT:
        raise InputError(f"{where}text: {len(text)} characters, at most {MAX_TEXT} (rules are injected into prompts)")
    if not keywords and not examples:
        raise InputError(f"{where}scope: a rule needs at least one keyword or example question")
    return text


def _row_to_rule(row: sqlite3.Row) -> Rule:
    return Rule(
        id=row["rule_id"],
        text=row["text"],
        keywords=tuple(json.loads(row["keywords"])),
        examples=tuple(json.loads(row["examples"])),
        enabled=bool(row["enabled"]),
        source=row["source"],
        provenance=json.loads(row["provenance"]),
        author=row["author"],
        note=row["note"],
        created_at=row["created_at"],
        version=row["version"],
        action=row["action"],
        changed_at=row["changed_at"],
        changed_by=row["changed_by"],
    )


class Codebook:
    """The versioned rule store in one SQLite file. Each method opens its own connection, so one
    object can be shared by threads and a forked process never inherits an open handle."""

    def __init__(self, path: str | Path | None = None, *, create: bool = True, timeout: float = 30.0):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.timeout = timeout
        if not self.path.exists():
            if not create:
                raise InputError(f"codebook.path: no codebook at {self.path} (add a rule with `irsflow codebook add`)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            try:
                self._ensure_wal(con)
            except sqlite3.OperationalError:
                raise  # locked or busy past the timeout: transient, let the caller retry
            except sqlite3.DatabaseError as err:
                raise InputError(f"codebook.path: {self.path} is not a codebook ({err})") from None
            # executescript commits any open transaction first, so the script carries its own.
            con.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")

    def _ensure_wal(self, con: sqlite3.Connection) -> None:
        """WAL is a property of the file: set once, then every connection uses it. Switching to it
        fails at once with "database is locked" while another process holds the new file open (SQLite
        does not call the busy handler there), so it is retried until ``timeout``."""
        deadline = time.monotonic() + self.timeout
        while con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                con.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # --- connections -------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise InputError(f"codebook.path: cannot open {self.path}: {err}") from None
        con.row_factory = sqlite3.Row
        with closing(con):
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            yield con

    @contextmanager
    def _write(self, con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: two writers cannot both read version N and write N+1.
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _append(self, con: sqlite3.Connection, rule: Rule, action: str, changed_by: str | None) -> Rule:
        version = con.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM rule_versions").fetchone()[0]
        rule = replace(rule, version=version, action=action, changed_at=utc_now(), changed_by=changed_by)
        con.execute(
            "INSERT INTO rule_versions (version, rule_id, action, text, keywords, examples, enabled, source, "
            "provenance, author, note, created_at, changed_at, changed_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                version,
                rule.id,
                action,
                rule.text,
                json.dumps(list(rule.keywords), ensure_ascii=False),
                json.dumps(list(rule.examples), ensure_ascii=False),
                int(rule.enabled),
                rule.source,
                json.dumps(rule.provenance, ensure_ascii=False, sort_keys=True),
                rule.author,
                rule.note,
                rule.created_at,
                rule.changed_at,
                changed_by,
            ),
        )
        return rule

    def _latest(self, con: sqlite3.Connection, rule_id: str) -> Rule:
        row = con.execute(
            "SELECT * FROM rule_versions WHERE rule_id = ? ORDER BY version DESC LIMIT 1", (rule_id,)
        ).fetchone()
        if row is None:
            raise InputError(f"rule id: no rule {rule_id!r} in {self.path}")
        return _row_to_rule(row)

    # --- writes ------------------------------------------------------------------------------
    def add(
        self,
        text: str,
        keywords: Iterable[str] = (),
        examples: Iterable[str] = (),
        *,
        source: str | None = None,
        author: str | None = None,
        provenance: dict | None = None,
        enabled: bool = True,
        note: str | None = None,
        rule_id: str | None = None,
    ) -> Rule:
        kw, ex = clean_terms(keywords, "keywords", True), clean_terms(examples, "examples", False)
        text = check_rule(text, kw, ex)
        if rule_id is not None and not RULE_ID.match(rule_id):
            raise InputError(f"rule id: {rule_id!r} must be 1-64 letters, digits, '_', '.', '-'")
        rule = Rule(
            id=rule_id or f"r-{secrets.token_hex(4)}",
            text=text,
            keywords=kw,
            examples=ex,
            enabled=bool(enabled),
            source=source,
            provenance=dict(provenance or {}),
            author=author,
            note=note,
            created_at=utc_now(),
        )
        with self._connect() as con, self._write(con):
            if con.execute("SELECT 1 FROM rule_versions WHERE rule_id = ?", (rule.id,)).fetchone():
                raise InputError(f"rule id: {rule.id!r} already exists in {self.path}")
            return self._append(con, rule, "add", author)

    def add_draft(self, draft: RuleDraft) -> Rule:
        return self.add(
            draft.text,
            draft.keywords,
            draft.examples,
            source=draft.source,
            author=draft.author,
            provenance=draft.provenance,
            enabled=False,
            note=draft.note,
        )

    def edit(
        self,
        rule_id: str,
        *,
        text: str | None = None,
        keywords: Iterable[str] | None = None,
        examples: Iterable[str] | None = None,
        note: str | None = None,
        author: str | None = None,
        provenance: dict | None = None,
    ) -> Rule:
        """Change text, scope and/or provenance (``None`` keeps a field). A call that changes nothing
        writes no version."""
        with self._connect() as con, self._write(con):
            old = self._latest(con, rule_id)
            kw = old.keywords if keywords is None else clean_terms(keywords, "keywords", True)
            ex = old.examples if examples is None else clean_terms(examples, "examples", False)
            new = replace(
                old,
                text=check_rule(old.text if text is None else text, kw, ex, rule_id),
                keywords=kw,
                examples=ex,
                note=old.note if note is None else note,
                provenance=old.provenance if provenance is None else dict(provenance),
            )
            if (new.text, new.keywords, new.examples, new.note, new.provenance) == (
                old.text,
                old.keywords,
                old.examples,
                old.note,
                old.provenance,
            ):
                return old
            return self._append(con, new, "edit", author)

    def set_enabled(self, rule_id: str, enabled: bool, note: str | None = None, author: str | None = None) -> Rule:
        with self._connect() as con, self._write(con):
            old = self._latest(con, rule_id)
            new = replace(old, enabled=bool(enabled), note=old.note if note is None else note)
            if (new.enabled, new.note) == (old.enabled, old.note):
                return old
            action = "note" if new.enabled == old.enabled else ("enable" if enabled else "disable")
            return self._append(con, new, action, author)

    # --- reads -------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT COALESCE(MAX(version), 0) FROM rule_versions").fetchone()[0]

    def snapshot(self, version: int | None = None) -> Snapshot:
        """Every rule as it stood at ``version`` (default: now), in order of creation. One read
        transaction, so the version and the rules always agree."""
        with self._connect() as con:
            con.execute("BEGIN")
            current = con.execute("SELECT COALESCE(MAX(version), 0) FROM rule_versions").fetchone()[0]
            if version is None:
                version = current
            elif not (isinstance(version, int) and 0 <= version <= current):
                raise InputError(f"codebook.version: {version!r} is not in 0..{current} ({self.path})")
            rows = con.execute(
                "SELECT r.*, (SELECT MIN(version) FROM rule_versions f WHERE f.rule_id = r.rule_id) AS first "
                "FROM rule_versions r WHERE r.version = (SELECT MAX(version) FROM rule_versions l "
                "WHERE l.rule_id = r.rule_id AND l.version <= ?) ORDER BY first",
                (version,),
            ).fetchall()
            con.execute("COMMIT")
        return Snapshot(version, tuple(_row_to_rule(r) for r in rows))

    def rules(self, enabled_only: bool = True, version: int | None = None) -> list[Rule]:
        snap = self.snapshot(version)
        return list(snap.enabled if enabled_only else snap.rules)

    def get(self, rule_id: str, version: int | None = None) -> Rule:
        for r in self.snapshot(version).rules:
            if r.id == rule_id:
                return r
        raise InputError(f"rule id: no rule {rule_id!r} in {self.path}" + (f" at version {version}" if version else ""))

    def history(self, rule_id: str) -> list[Rule]:
        """Every version of one rule, oldest first."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM rule_versions WHERE rule_id = ? ORDER BY version", (rule_id,)).fetchall()
        if not rows:
            raise InputError(f"rule id: no rule {rule_id!r} in {self.path}")
        return [_row_to_rule(r) for r in rows]

    def content_hash(self, version: int | None = None) -> str:
        return self.snapshot(version).content_hash()

    def merge(self, rules: Iterable[Rule], author: str | None = None) -> list[Rule]:
        """Merge checked rules (an import): unknown ids are added, known ids whose text, scope or
        enabled flag differ get a new version (keeping their ``created_at``), identical ones are
        skipped. One write transaction; returns the versions written, each with action ``import``."""
        changed: list[Rule] = []
        with self._connect() as con, self._write(con):
            for new in rules:
                try:
                    old = self._latest(con, new.id)
                except InputError:
                    changed.append(self._append(con, new, "import", author))
                    continue
                if (old.text, old.keywords, old.examples, old.enabled) != (
                    new.text,
                    new.keywords,
                    new.examples,
                    new.enabled,
                ):
                    changed.append(self._append(con, replace(new, created_at=old.created_at), "import", author))
        return changed

    # --- files (irsflow.codebook.exchange builds on this module, hence the imports inside) ----
    def export(self, path: str | Path, fmt: str = "jsonl", version: int | None = None) -> Path:
        """Write the rules as of ``version`` to a file: see ``exchange.export_rules``."""
        from irsflow.codebook.exchange import export_rules

        return export_rules(self, path, fmt, version)

    def import_(self, path: str | Path, author: str | None = None) -> list[Rule]:
        """Merge an exported file, all or nothing: see ``exchange.import_rules``."""
        from irsflow.codebook.exchange import import_rules

        return import_rules(self, path, author)
