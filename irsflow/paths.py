"""Which files a request may name, and how they are read.

A request (the job API's body, ``irsflow train --request FILE``, a flow's ``request`` parameter)
names files: the question set, the rule file, adapters, model folders, pairs and anchors, the
codebook and the teacher's cache. Each must lie, once symlinks are resolved, inside an allowed root:

- the data dir (``$IRSFLOW_DATA_DIR``),
- the files the package ships (``irsflow/data``, read through ``builtin:*`` names),
- the folders the operator lists in ``$IRSFLOW_ALLOWED_ROOTS`` (separated by ``os.pathsep``).

Files the job writes (the teacher's cache, the codebook) must lie inside a writable root instead:
the data dir or ``$IRSFLOW_WRITABLE_ROOTS``, and be new or irsflow's own SQLite file. ``builtin:``
names, registry references (adapters only) and hub ids name no file and are matched whole, so no
prefix lets a relative path through. A refusal lists the roots and never says whether the path
exists. Files a request names are read with :func:`read_bytes` / :func:`read_text`: regular files
only (a FIFO or a device is refused at once, never waited on), at most ``$IRSFLOW_MAX_INPUT_BYTES``
(default 256 MiB).

    confine("/data/questions.jsonl")          # -> the resolved Path, or OutsideRoots (a ValueError)
    text = read_text("dataset", path)         # regular file, size-capped; InputError names the field

The schema uses :data:`RequestPath`, :data:`ModelRef`, :data:`AdapterRef` (``Confined`` on a
``Path``) on every field that names a file it reads, and :func:`WritableSQLite` on those it writes.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from irsflow.errors import InputError
from irsflow.store import data_dir

ROOTS_ENV = "IRSFLOW_ALLOWED_ROOTS"
MAX_BYTES_ENV = "IRSFLOW_MAX_INPUT_BYTES"
DEFAULT_MAX_BYTES = 256 * 2**20
PACKAGE_DATA = Path(__file__).resolve().parent / "data"
WRITE_ROOTS_ENV = "IRSFLOW_WRITABLE_ROOTS"
# Values that name no file, each matched whole (a prefix alone would let "registry:/../x" through as a
# relative path): shipped resources, registry references, hub ids.
_BUILTIN = re.compile(r"^builtin:[A-Za-z0-9][A-Za-z0-9_-]*$")
_REGISTRY = re.compile(
    r"^(registry:([A-Za-z][A-Za-z0-9_-]{0,63}|[0-9]{1,9})"
    r"|models:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@[A-Za-z][A-Za-z0-9_-]{0,63}|/[0-9]{1,9}))$"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*/[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


class OutsideRoots(ValueError):
    """A request path outside every allowed root (pydantic reports it under the field's path)."""


def _roots(*fixed: Path, env: str) -> list[Path]:
    """``fixed`` and the folders listed in ``$env`` (``os.pathsep``-separated), symlinks resolved, once each."""
    extra = [p for p in os.environ.get(env, "").split(os.pathsep) if p.strip()]
    roots = []
    for p in (*fixed, *extra):
        real = Path(os.path.realpath(Path(p).expanduser()))
        if real not in roots:
            roots.append(real)
    return roots


def allowed_roots() -> list[Path]:
    """The data dir, the package's shipped data and ``$IRSFLOW_ALLOWED_ROOTS``, symlinks resolved."""
    return _roots(data_dir(), PACKAGE_DATA, env=ROOTS_ENV)


def _inside(real: Path, roots: list[Path]) -> bool:
    return any(real == root or root in real.parents for root in roots)


def confine(path: str | Path) -> Path:
    """``path`` with symlinks resolved (relative to the working directory), if it lies inside an
    allowed root; else :class:`OutsideRoots`, whose message is the same whether the path exists or not."""
    real = Path(os.path.realpath(Path(path).expanduser()))
    roots = allowed_roots()
    if not _inside(real, roots):
        raise OutsideRoots(
            f"{str(path)!r} is outside the allowed roots ({', '.join(map(str, roots))}); "
            f"the operator adds roots with {ROOTS_ENV}"
        )
    return real


def writable_roots() -> list[Path]:
    """Where a request may have files written: the data dir and ``$IRSFLOW_WRITABLE_ROOTS``, symlinks
    resolved. Read-only roots (``$IRSFLOW_ALLOWED_ROOTS``, the shipped data) are not among them."""
    return _roots(data_dir(), env=WRITE_ROOTS_ENV)


def confine_writable(path: str | Path, table: str) -> Path:
    """``path`` (an SQLite file irsflow writes, holding ``table``) if it lies inside a writable root,
    and is absent, empty or already such a file: never another database or file the job would
    change by opening it. The refusal outside the roots says nothing of what exists there."""
    real = Path(os.path.realpath(Path(path).expanduser()))
    roots = writable_roots()
    if not _inside(real, roots):
        raise OutsideRoots(
            f"{str(path)!r} is outside the writable roots ({', '.join(map(str, roots))}); "
            f"the operator adds roots with {WRITE_ROOTS_ENV}"
        )
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{str(path)!r} is {kind_of(st.st_mode)}, not an SQLite file")
    if st.st_size and not _sqlite_has_table(real, table):
        raise ValueError(
            f"{str(path)!r} exists and is not irsflow's (no {table!r} table): name a new file or one irsflow wrote"
        )
    return real


def _sqlite_has_table(path: Path, table: str) -> bool:
    import sqlite3

    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            return False
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return (
                con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
                is not None
            )
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _request_path(value):
    """Only ``builtin:NAME`` names no file; everything else is a path, confined."""
    if value is None:
        return value
    text = str(value)
    if text.startswith("builtin:"):
        if not _BUILTIN.match(text):  # the name picks a shipped file: it must not be a path
            raise ValueError(f"{text!r} is not a builtin name (builtin: then letters, digits, '_' or '-')")
    else:
        confine(value)
    return value


def _model_ref(value):
    """A hub id (exactly ``org/name``, no such entry here) names no local file; anything else is a path."""
    if value is None or _HUB_ID.match(value) is None or os.path.lexists(value):
        return _request_path(value)
    return value


def _adapter_ref(value):
    """As :func:`_model_ref`, or a registry reference matched whole (``registry:champion``,
    ``registry:3``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``): never a path behind a prefix."""
    if value is not None and _REGISTRY.match(value):
        return value
    return _model_ref(value)


def _writable(table: str):
    def check(value):
        return value if value is None else confine_writable(value, table) and value

    return AfterValidator(check)


# a file or folder a request names (only builtin:* names pass: they name shipped data);
# ``Confined`` alone for a field of another type (a Path)
Confined = AfterValidator(_request_path)
RequestPath = Annotated[str, Confined]
# a model: as RequestPath, but a hub id ("Qwen/Qwen2.5-0.5B-Instruct") is not a path
ModelRef = Annotated[str, AfterValidator(_model_ref)]
# an adapter: as ModelRef, or a registry reference
AdapterRef = Annotated[str, AfterValidator(_adapter_ref)]
# an SQLite file the job writes (the teacher's cache, the codebook), with the table that marks it as irsflow's
WritableSQLite = _writable


def max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV)
    return int(raw) if raw and raw.strip().isdigit() else DEFAULT_MAX_BYTES


def kind_of(mode: int) -> str:
    """What a non-regular file is, for messages ("a directory", "a FIFO (named pipe)", ...)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_bytes(field: str, path: str | Path, limit: int | None = None, error: type[Exception] = InputError) -> bytes:
    """The content of the regular file at ``path``, at most ``limit`` bytes (default ``max_bytes()``).
    Anything else raises ``error`` naming ``field`` and what the path is. Opened without blocking,
    so a FIFO with no writer is refused at once instead of hanging its reader."""
    limit = max_bytes() if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{field}: no such file: {path}") from None
    except OSError as err:
        raise error(f"{field}: cannot read {path} ({err.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{field}: {path} is {kind_of(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise error(f"{field}: {path} is {st.st_size} bytes, more than the limit of {limit} ({MAX_BYTES_ENV})")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise error(f"{field}: {path} is more than the limit of {limit} bytes ({MAX_BYTES_ENV})")
    return data


def read_text(field: str, path: str | Path, limit: int | None = None, error: type[Exception] = InputError) -> str:
    """:func:`read_bytes` decoded as UTF-8; text that is not raises ``error`` naming ``field``."""
    try:
        return read_bytes(field, path, limit, error).decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{field}: {path} is not UTF-8 ({err.reason})") from None
