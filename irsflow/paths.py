"""Which files a request may name, and how they are read.

A request (the job API's body, ``irsflow train --request FILE``, a flow's ``request`` parameter)
names files: the question set, the rule file, adapters, model folders, pairs and anchors, the
codebook and the teacher's cache. Each must lie, once symlinks are resolved, inside an allowed root:

- the data dir (``$IRSFLOW_DATA_DIR``),
- the files the package ships (``irsflow/data``, read through ``builtin:*`` names),
- the folders the operator lists in ``$IRSFLOW_ALLOWED_ROOTS`` (separated by ``os.pathsep``).

A refusal lists the roots and never says whether the path exists. Files a request names are read
with :func:`read_bytes` / :func:`read_text`: regular files only (a FIFO or a device is refused at
once, never waited on), at most ``$IRSFLOW_MAX_INPUT_BYTES`` (default 256 MiB).

    confine("/data/questions.jsonl")          # -> the resolved Path, or OutsideRoots (a ValueError)
    text = read_text("dataset", path)         # regular file, size-capped; InputError names the field

The schema uses :data:`RequestPath` and :data:`ModelRef` (``Confined`` on a ``Path``) on every field that
names a file.
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
# Values that name no file: shipped resources and registry references, resolved by the code that reads them.
SPEC_PREFIXES = ("builtin:", "registry:", "models:/")
_BUILTIN = re.compile(r"^builtin:[A-Za-z0-9][A-Za-z0-9_-]*$")


class OutsideRoots(ValueError):
    """A request path outside every allowed root (pydantic reports it under the field's path)."""


def allowed_roots() -> list[Path]:
    """The data dir, the package's shipped data and ``$IRSFLOW_ALLOWED_ROOTS``, symlinks resolved."""
    extra = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    roots = []
    for p in (data_dir(), PACKAGE_DATA, *extra):
        real = Path(os.path.realpath(Path(p).expanduser()))
        if real not in roots:
            roots.append(real)
    return roots


def confine(path: str | Path) -> Path:
    """``path`` with symlinks resolved (relative to the working directory), if it lies inside an
    allowed root; else :class:`OutsideRoots`, whose message is the same whether the path exists or not."""
    real = Path(os.path.realpath(Path(path).expanduser()))
    roots = allowed_roots()
    if not any(real == root or root in real.parents for root in roots):
        raise OutsideRoots(f"{str(path)!r} is outside the allowed roots ({', '.join(map(str, roots))}); "
                           f"the operator adds roots with {ROOTS_ENV}")
    return real


def _request_path(value):
    if value is None:
        return value
    text = str(value)
    if text.startswith("builtin:"):
        if not _BUILTIN.match(text):  # the name picks a shipped file: it must not be a path
            raise ValueError(f"{text!r} is not a builtin name (builtin: then letters, digits, '_' or '-')")
    elif not text.startswith(SPEC_PREFIXES):
        confine(value)
    return value


def _model_ref(value):
    """A hub id (``org/name``, no such entry here) names no local file; anything path-like is confined."""
    if value is None or value.startswith(SPEC_PREFIXES):
        return _request_path(value)
    path_like = value.startswith((".", "/", "~")) or value.count("/") > 1 or os.path.lexists(value)
    return _request_path(value) if path_like else value


# a file or folder a request names (builtin:* and registry references pass: they name shipped or registered data);
# ``Confined`` alone for a field of another type (a Path)
Confined = AfterValidator(_request_path)
RequestPath = Annotated[str, Confined]
# a model or adapter: as RequestPath, but a hub id ("Qwen/Qwen2.5-0.5B-Instruct") is not a path
ModelRef = Annotated[str, AfterValidator(_model_ref)]


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
    """:func:`read_bytes` decoded as UTF-8 (``UnicodeDecodeError`` is left to the caller)."""
    return read_bytes(field, path, limit, error).decode("utf-8")
