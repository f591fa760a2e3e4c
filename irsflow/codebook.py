"""The codebook: reviewed human corrections kept as short rules that are put into prompts, no retraining.

A rule is a one-line instruction plus a scope saying where it applies: example questions (their
MiniLM embeddings define the neighbourhood, see ``irsflow.codebook_retrieval``) and/or keywords.
The store is one SQLite file (default ``<data dir>/codebook.sqlite``) holding an append-only table
of rule versions: every add, edit or enable/disable writes a new immutable row, and that row's
number is the codebook version. ``snapshot(v)`` rebuilds the rules exactly as of version ``v``, so
a training job records (version, ``content_hash()``) and can reproduce its prompts later.

    cb = Codebook()                                    # or Codebook("path/to/codebook.sqlite")
    r = cb.add("Cool a burn under running water, never ice.", keywords=["burn"],
               examples=["What is the first aid for a small burn?"], source="label-studio")
    cb.set_enabled(r.id, False, note="too broad"); cb.version, cb.content_hash()
    cb.add_draft(rule_from_correction(question, model_answer, corrected_answer))  # disabled draft

WAL journaling and ``BEGIN IMMEDIATE`` write transactions let several processes read and write at
once: writers queue on the lock (up to ``timeout`` seconds), readers never block.
CLI: ``irsflow codebook list|add|edit|enable|disable|export|import|history`` (flows/cli_codebook.py).
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from irsflow.errors import InputError
from irsflow.rewards.similarity import content_words
from irsflow.store import atomic_write_text, data_dir, utc_now

MAX_TEXT = 500  # rules are appended to every matching prompt: keep them to a sentence or two
EXPORT_FORMAT = "irsflow-codebook/1"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
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


def _clean_list(values: Iterable[str] | str | None, name: str, lower: bool) -> tuple[str, ...]:
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


def _check_rule(text: str, keywords: tuple, examples: tuple, rule_id: str | None = None) -> str:
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
    return Rule(id=row["rule_id"], text=row["text"], keywords=tuple(json.loads(row["keywords"])),
                examples=tuple(json.loads(row["examples"])), enabled=bool(row["enabled"]), source=row["source"],
                provenance=json.loads(row["provenance"]), author=row["author"], note=row["note"],
                created_at=row["created_at"], version=row["version"], action=row["action"],
                changed_at=row["changed_at"], changed_by=row["changed_by"])


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
            (version, rule.id, action, rule.text, json.dumps(list(rule.keywords), ensure_ascii=False),
             json.dumps(list(rule.examples), ensure_ascii=False), int(rule.enabled), rule.source,
             json.dumps(rule.provenance, ensure_ascii=False, sort_keys=True), rule.author, rule.note,
             rule.created_at, rule.changed_at, changed_by))
        return rule

    def _latest(self, con: sqlite3.Connection, rule_id: str) -> Rule:
        row = con.execute("SELECT * FROM rule_versions WHERE rule_id = ? ORDER BY version DESC LIMIT 1",
                          (rule_id,)).fetchone()
        if row is None:
            raise InputError(f"rule id: no rule {rule_id!r} in {self.path}")
        return _row_to_rule(row)

    # --- writes ------------------------------------------------------------------------------
    def add(self, text: str, keywords: Iterable[str] = (), examples: Iterable[str] = (), *, source: str | None = None,
            author: str | None = None, provenance: dict | None = None, enabled: bool = True,
            note: str | None = None, rule_id: str | None = None) -> Rule:
        kw, ex = _clean_list(keywords, "keywords", True), _clean_list(examples, "examples", False)
        text = _check_rule(text, kw, ex)
        if rule_id is not None and not _ID.match(rule_id):
            raise InputError(f"rule id: {rule_id!r} must be 1-64 letters, digits, '_', '.', '-'")
        rule = Rule(id=rule_id or f"r-{secrets.token_hex(4)}", text=text, keywords=kw, examples=ex,
                    enabled=bool(enabled), source=source, provenance=dict(provenance or {}), author=author,
                    note=note, created_at=utc_now())
        with self._connect() as con, self._write(con):
            if con.execute("SELECT 1 FROM rule_versions WHERE rule_id = ?", (rule.id,)).fetchone():
                raise InputError(f"rule id: {rule.id!r} already exists in {self.path}")
            return self._append(con, rule, "add", author)

    def add_draft(self, draft: RuleDraft) -> Rule:
        return self.add(draft.text, draft.keywords, draft.examples, source=draft.source, author=draft.author,
                        provenance=draft.provenance, enabled=False, note=draft.note)

    def edit(self, rule_id: str, *, text: str | None = None, keywords: Iterable[str] | None = None,
             examples: Iterable[str] | None = None, note: str | None = None, author: str | None = None,
             provenance: dict | None = None) -> Rule:
        """Change text, scope and/or provenance (``None`` keeps a field). A call that changes nothing
        writes no version."""
        with self._connect() as con, self._write(con):
            old = self._latest(con, rule_id)
            kw = old.keywords if keywords is None else _clean_list(keywords, "keywords", True)
            ex = old.examples if examples is None else _clean_list(examples, "examples", False)
            new = replace(old, text=_check_rule(old.text if text is None else text, kw, ex, rule_id),
                          keywords=kw, examples=ex, note=old.note if note is None else note,
                          provenance=old.provenance if provenance is None else dict(provenance))
            if ((new.text, new.keywords, new.examples, new.note, new.provenance)
                    == (old.text, old.keywords, old.examples, old.note, old.provenance)):
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
                "WHERE l.rule_id = r.rule_id AND l.version <= ?) ORDER BY first", (version,)).fetchall()
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

    # --- exchange ----------------------------------------------------------------------------
    def export(self, path: str | Path, fmt: str = "jsonl", version: int | None = None) -> Path:
        """Write every rule (enabled or not) as of ``version``: ``jsonl`` one rule per line, or ``json``
        one object with the version and content hash. Written atomically."""
        snap, path = self.snapshot(version), Path(path)
        rules = [r.to_dict() for r in snap.rules]
        if fmt == "jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rules)
        elif fmt == "json":
            text = json.dumps({"format": EXPORT_FORMAT, "version": snap.version, "content_hash": snap.content_hash(),
                               "exported_at": utc_now(), "rules": rules}, indent=2, ensure_ascii=False) + "\n"
        else:
            raise InputError(f"format: {fmt!r} is not one of jsonl, json")
        atomic_write_text(path, text)
        return path

    def import_(self, path: str | Path, author: str | None = None) -> list[Rule]:
        """Merge an export: unknown ids are added, known ids whose text, scope or enabled flag differ get
        a new version, identical ones are skipped (importing twice changes nothing); a rule without an
        ``enabled`` field comes in disabled, awaiting review. All or nothing."""
        incoming = _read_export(Path(path))
        changed: list[Rule] = []
        with self._connect() as con, self._write(con):
            for where, d in incoming:
                kw, ex = _clean_list(d.get("keywords"), f"{where}: keywords", True), \
                    _clean_list(d.get("examples"), f"{where}: examples", False)
                try:
                    text = _check_rule(d.get("text"), kw, ex)
                except InputError as err:
                    raise InputError(f"{where}: {err}") from None
                rid = d.get("id")
                if not isinstance(rid, str) or not _ID.match(rid):
                    raise InputError(f"{where}: id: {rid!r} is not a valid rule id")
                new = Rule(id=rid, text=text, keywords=kw, examples=ex, enabled=bool(d.get("enabled", False)),
                           source=d.get("source"), provenance=dict(d.get("provenance") or {}), author=d.get("author"),
                           note=d.get("note"), created_at=d.get("created_at") or utc_now())
                try:
                    old = self._latest(con, rid)
                except InputError:
                    changed.append(self._append(con, new, "import", author))
                    continue
                if (old.text, old.keywords, old.examples, old.enabled) != (new.text, new.keywords, new.examples,
                                                                         new.enabled):
                    changed.append(self._append(con, replace(new, created_at=old.created_at), "import", author))
        return changed


def _read_export(path: Path) -> list[tuple[str, dict]]:
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
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{n}: not valid JSON: {err.msg}") from None
    for where, d in items:
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a rule object, got {type(d).__name__}")
    return items


# --- drafts from corrections ------------------------------------------------------------------
# common words that say nothing about a question's topic (on top of the similarity stop words)
_GENERIC = frozenset("please tell explain know want need really much many get make like way thing things someone "
                     "something anyone anything there here about into also just very after before during while "
                     "again still even ever every other some any most more less only same right first last "
                     "best good bad new old".split())
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def salient_keywords(question: str, limit: int = 5) -> tuple[str, ...]:
    """Content words of ``question`` in order (stop words, generic verbs and short words dropped)."""
    words = [w.lower() for w in re.findall(r"[^\W_]+", question)]
    keep = content_words(question) - _GENERIC
    return tuple(dict.fromkeys(w for w in words if w in keep and len(w) >= 3))[:limit]


def rule_from_correction(question: str, original_answer: str, corrected_answer: str, *,
                         source: str = "label-studio", provenance: dict | None = None,
                         author: str | None = None) -> RuleDraft:
    """A disabled draft rule from one human correction, built without a model: scope = the question
    as example plus its salient words as keywords; text = the question's gist and the corrected
    answer's first sentence. A reviewer is expected to rewrite it into a general instruction."""
    if not isinstance(question, str) or not question.strip():
        raise InputError("question: must not be empty")
    if not isinstance(corrected_answer, str) or not corrected_answer.strip():
        raise InputError("corrected_answer: must not be empty")
    if " ".join((original_answer or "").split()) == " ".join(corrected_answer.split()):
        raise InputError("corrected_answer: same as the original answer, nothing to learn")
    first = _SENTENCE.split(corrected_answer.strip(), maxsplit=1)[0]
    text = f"For questions like \"{_clip(question, 120)}\": {_clip(first, 300)}"
    prov = {"kind": "correction", "original_answer": _clip(original_answer or "", 1000),
            "corrected_answer": _clip(corrected_answer, 1000), **(provenance or {})}
    return RuleDraft(text=text, keywords=salient_keywords(question), examples=(" ".join(question.split()),),
                     source=source, provenance=prov, author=author)
