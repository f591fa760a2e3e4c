"""The Langfuse public API as the feedback extraction reads it: settings, errors, the HTTP layer
with our retries, and what both API generations hand the extraction (``Page``, ``Generation``).

    http = LangfuseHttp(LangfuseSettings.from_env(), stats=Counter())
    http.get("list scores", "api/public/v3/scores", {"limit": 100, ...})   # JSON dict; raises LangfuseError
    api = GENERATIONS["v4"](http, pool)    # langfuse.GENERATIONS: "v3" LegacyApi, "v4" V4Api
    api.score_pages(frm, to)               # Pages of feedback scores, newest first
    api.trace_pages(frm, to)               # Pages of traces, newest first
    api.fetch_traces(ids, since)           # traces by id, each with its scores newer than ``since``

Two generations of the read API are in use (``api_version``): Langfuse v3 (self-hosted, the legacy
routes ``/api/public/v2/scores``, ``/api/public/traces``) and Langfuse v4 (Cloud, self-hosted v4:
``/api/public/v3/scores``, ``/api/public/v2/observations``). Both hand out rows in one shape, the
legacy one: a score ``{"id", "traceId", "name", "timestamp", "value", "stringValue", "dataType",
"comment"}`` and a trace ``{"id", "timestamp", "name", "input", "output", "metadata", "sessionId",
"userId", "tags"[, "scores"]}``.

Transport is the SDK's own generated HTTP layer (``langfuse.api.core.SyncClientWrapper``: base
URL, basic auth, query encoding), but the JSON is read as plain dicts: the SDK's typed parse costs
2.2 ms per score here (it re-evaluates type hints per object; the JSON alone 0.03 ms).
``Langfuse()`` is not used: it starts background threads even with tracing disabled.

Retries are ours (the SDK's are switched off, ``max_retries=0``; its own retry 429/5xx twice,
honour Retry-After, but never retry connection errors): 429/503 wait ``Retry-After`` (seconds or
an HTTP date, read by ``irsflow.retry.retry_after_s``) when given, else 408/429/5xx and connection
errors back off exponentially, at most ``max_retries`` times, each wait capped at ``max_wait_s``.
401/403 raise ``LangfuseAuthError`` (an ``InputError``: never retried) naming the env vars, never
the keys. Other 4xx (404, 410 of a retired route) raise ``LangfuseError`` at once with the status
code: the extraction's cue to switch generation. A route the server's own settings keep off
raises ``LangfuseServerSetupError`` (an ``InputError``) naming the server setting to change.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from irsflow.errors import ConfigError, InputError, IrsflowError
from irsflow.feedback.state import as_utc
from irsflow.retry import retry_after_s

log = logging.getLogger("irsflow.feedback.langfuse")


def _env(*names: str) -> str:
    return next((os.environ[n] for n in names if os.environ.get(n)), "")


class LangfuseSettings(BaseModel):
    """Where Langfuse is and what counts as feedback. Keys are SecretStr: never in repr or dumps."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)  # env defaults checked too
    host: str = Field(
        default_factory=lambda: _env("LANGFUSE_HOST", "LANGFUSE_BASE_URL"),
        description="e.g. https://langfuse.example.com (env LANGFUSE_HOST or LANGFUSE_BASE_URL)",
    )
    public_key: SecretStr = Field(default_factory=lambda: SecretStr(_env("LANGFUSE_PUBLIC_KEY")))
    secret_key: SecretStr = Field(default_factory=lambda: SecretStr(_env("LANGFUSE_SECRET_KEY")))
    score_name: str = Field("user-feedback", min_length=1)
    score_data_type: Literal["BOOLEAN", "CATEGORICAL", "NUMERIC"] = "BOOLEAN"
    up_values: tuple[float | str, ...] = Field(
        (1,),
        description="values meaning thumbs up (str: a CATEGORICAL or BOOLEAN stringValue, number: the numeric value)",
    )
    down_values: tuple[float | str, ...] = (0,)
    environment: tuple[str, ...] | None = Field(None, description="only feedback from these Langfuse environments")
    start: datetime | None = Field(None, description="first run starts here (None: from the beginning)")
    overlap_minutes: float = Field(15, ge=0, description="re-read this much before the watermark (read lag)")
    trace_lookback_minutes: float = Field(60, ge=0, description="list traces this far before their feedback")
    trace_fetch: Literal["auto", "list", "get"] = "auto"
    api_version: Literal["auto", "v3", "v4"] = Field(
        "auto",
        description="read API generation: v3 = legacy routes (self-hosted Langfuse v3), v4 = "
        "/api/public/v3/scores + /api/public/v2/observations (Langfuse Cloud, v4); auto: the one that "
        "answered last run (first run: v3), switching once per run when its routes answer 404/410",
    )
    latest_per_trace: bool = Field(True, description="one record per trace: its newest feedback")
    page_size: int = Field(100, ge=1, le=100, description="the score APIs refuse more than 100")
    get_workers: int = Field(4, ge=1, le=32)
    timeout_s: float = Field(30, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(1.0, ge=0, description="first back-off; doubles per retry")
    max_wait_s: float = Field(120, ge=0, description="ceiling on one wait, Retry-After included")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v:
            raise ValueError("not set (env LANGFUSE_HOST or LANGFUSE_BASE_URL)")
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("environment", mode="before")
    @classmethod
    def _one_env(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> LangfuseSettings:
        for field, env in (("public_key", "LANGFUSE_PUBLIC_KEY"), ("secret_key", "LANGFUSE_SECRET_KEY")):
            if not getattr(self, field).get_secret_value():
                raise ValueError(f"{field}: not set (env {env})")
        if set(self.up_values) & set(self.down_values):
            raise ValueError(f"up_values and down_values overlap: {set(self.up_values) & set(self.down_values)}")
        return self

    @classmethod
    def from_env(cls, **overrides: Any) -> LangfuseSettings:
        """Defaults from the environment, ``overrides`` on top; errors name the field, never a value."""
        try:
            return cls(**overrides)
        except ValidationError as e:
            # Built from loc + msg only: pydantic's own text repeats the input, which may be a key.
            why = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"langfuse settings: {why}") from None


class LangfuseError(IrsflowError):
    """A Langfuse call that failed for good; ``status_code`` None for connection errors."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class LangfuseAuthError(InputError):
    """Langfuse refused the keys (401/403)."""


class LangfuseServerSetupError(LangfuseError, InputError):
    """The server answers, but its own settings keep a read route off: retrying cannot help; the
    message names what the Langfuse operator has to set (see ``SERVER_FLAGS``)."""


# What a self-hosted Langfuse must have on for the v4 read API (langfuse/langfuse):
# - GET /api/public/v3/scores answers 404 {"message": "Not Found", "error": "LangfuseNotFoundError"}
#   unless LANGFUSE_ENABLE_SCORES_V3_API=true, in v3.179.0-v3.179.1 only (web/src/pages/api/public/
#   v3/scores/index.ts, web/src/env.mjs; the flag went with commit d32b852, v3.180.0: always on since).
# - GET /api/public/v2/observations answers 404 "The observations v2 API is only available in a
#   Langfuse v4 write mode..." unless LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true (web/src/pages/
#   api/public/v2/observations/index.ts; web/src/env.mjs default "false" in v3.x, "true" from v4.0.0).
# With LANGFUSE_MIGRATION_V4_WRITE_MODE=events_only the legacy routes answer 404 before auth
# (createAuthedProjectAPIRoute.ts ``rejectInEventsOnlyMode``), so only these two remain.
SCORES_FLAG = "LANGFUSE_ENABLE_SCORES_V3_API=true"
OBSERVATIONS_FLAG = "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true"
SERVER_FLAGS = f"{SCORES_FLAG} and {OBSERVATIONS_FLAG}"
RESTART = "in the environment of the Langfuse web server (not this machine) and restart it"


def wire_time(t: datetime | None) -> str | None:
    """A query timestamp as the SDK sends it (``serialize_datetime``: UTC with "Z")."""
    return None if t is None else as_utc(t).isoformat().replace("+00:00", "Z")


def parse_time(s: str) -> datetime:
    return as_utc(datetime.fromisoformat(s))  # Python 3.11 reads Langfuse's "...123Z"


class LangfuseHttp:
    """GETs against one Langfuse project; counts ``requests`` and ``retries`` into ``stats``.
    Thread-safe: trace GETs run in a pool."""

    def __init__(self, settings: LangfuseSettings, stats: Counter | None = None):
        self.settings = settings
        self.stats = Counter() if stats is None else stats
        self._lock = threading.Lock()
        self._http, self._sdk = self._make_client()

    def close(self) -> None:
        self._http.close()

    def _make_client(self):
        import httpx
        from langfuse._version import __version__
        from langfuse.api.core import SyncClientWrapper  # importing langfuse loads OpenTelemetry: ~1 s, lazily

        s = self.settings
        http = httpx.Client(timeout=s.timeout_s, follow_redirects=True)
        # Keys as callables: the client never holds them as plain attributes.
        sdk = SyncClientWrapper(
            base_url=s.host,
            username=s.public_key.get_secret_value,
            password=s.secret_key.get_secret_value,
            x_langfuse_sdk_name="python",
            x_langfuse_sdk_version=__version__,
            timeout=s.timeout_s,
            httpx_client=http,
        )
        return http, sdk.httpx_client

    def get(self, what: str, path: str, params: dict, missing_ok: bool = False) -> dict | None:
        import httpx

        s = self.settings
        opts = {"max_retries": 0, "timeout_in_seconds": s.timeout_s}  # the SDK's retries off: ours below
        for attempt in range(s.max_retries + 1):
            with self._lock:  # GETs run in a thread pool
                self.stats["requests"] += 1
            try:
                # stream(), body read into our own bytes: a read() response keeps its body inside an
                # httpx reference cycle (response <-> stream), alive until a full GC: memory would
                # then grow with the number of pages.
                with self._sdk.stream(path, method="GET", params=params, request_options=opts) as resp:
                    body = b"".join(resp.iter_bytes())
            except httpx.TransportError as e:
                if attempt == s.max_retries:
                    raise LangfuseError(
                        f"Langfuse {what}: cannot reach {s.host} ({type(e).__name__}) after {attempt + 1} attempt(s)"
                    ) from e
                wait, reason = None, type(e).__name__
            else:
                code = resp.status_code
                if code < 300:
                    return json.loads(body)
                if code in (401, 403):
                    raise LangfuseAuthError(
                        f"Langfuse at {s.host} refused the API keys (HTTP {code}) on {what}: check "
                        "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (the project's pk-lf-/sk-lf- pair)"
                    )
                if code == 404 and missing_ok:
                    return None
                if not (code in (408, 429) or code >= 500) or attempt == s.max_retries:
                    raise LangfuseError(
                        f"Langfuse {what}: HTTP {code} after {attempt + 1} attempt(s): "
                        f"{body[:300].decode('utf-8', 'replace')}",
                        code,
                    )
                wait, reason = retry_after_s(resp.headers), f"HTTP {code}"
            if wait is None:  # exponential back-off, +0-25 % jitter so parallel GETs do not retry in step
                wait = s.backoff_s * 2**attempt * (1 + random.random() / 4)
            wait = min(wait, s.max_wait_s)
            with self._lock:
                self.stats["retries"] += 1
            log.warning("Langfuse %s: %s, retry %d/%d in %.1f s", what, reason, attempt + 1, s.max_retries, wait)
            time.sleep(wait)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, rows in the shared (legacy) shape. ``more``: the server says more
    pages follow (a page may be short, even empty, and still have ``more``). ``total``: items in
    the whole listing where the server counts them (legacy pages), else None (cursor pages)."""

    rows: list[dict]
    more: bool
    total: int | None = None


class Generation(Protocol):
    """One generation of the Langfuse read API (``langfuse_v3.LegacyApi``, ``langfuse_v4.V4Api``)."""

    name: str
    dead_codes: tuple[int, ...]  # a first answer with one of these: this generation's routes are gone

    def score_pages(self, frm: datetime | None, to: datetime) -> Iterator[Page]: ...

    def trace_pages(self, frm: datetime | None, to: datetime) -> Iterator[Page]: ...

    def fetch_traces(self, trace_ids: list[str], since: datetime) -> list[dict | None]: ...
