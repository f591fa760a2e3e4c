"""Teacher settings: the endpoint, model, thinking switch, retries, budget and prices (seed 001).

    cfg = TeacherConfig(model="deepseek-v4-pro", budget_usd=5.0)   # stored, logged, shown: no key
    settings = cfg.with_key()                                     # + the key from $DEEPSEEK_API_KEY

The key goes only where the operator sends it: an unset ``base_url`` is ``$IRSFLOW_TEACHER_BASE_URL``
(else DeepSeek's) where the job runs, and a request that names another endpoint is refused unless its host is listed in
``$IRSFLOW_TEACHER_ALLOWED_HOSTS`` (``host`` or ``host:port``, comma-separated; https only, but for
loopback hosts). The client checks again before it sends the key (``check_endpoint``).

The defaults are DeepSeek V4's (api-docs.deepseek.com): thinking switched off for judging, its
published prices. A budget needs a price for the model: one without is refused before any call.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from irsflow.paths import WritableSQLite
from irsflow.store import data_dir

KEY_ENV = ("IRSFLOW_TEACHER_API_KEY", "DEEPSEEK_API_KEY")
BASE_URL_ENV, ALLOWED_HOSTS_ENV = "IRSFLOW_TEACHER_BASE_URL", "IRSFLOW_TEACHER_ALLOWED_HOSTS"
DEFAULT_BASE_URL = "https://api.deepseek.com"
_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)
_Hour = Annotated[int, Field(ge=0, le=24)]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # template ids and versions name a file in templates/: no paths


class Price(BaseModel):
    model_config = _STRICT
    input_per_mtok: float = Field(ge=0, le=10_000, description="USD per million prompt tokens (cache miss)")
    output_per_mtok: float = Field(ge=0, le=10_000, description="USD per million completion tokens, reasoning included")
    input_cache_hit_per_mtok: float | None = Field(
        None,
        ge=0,
        le=10_000,
        description="USD per million prompt tokens served from the provider's context cache; None: as a miss",
    )
    peak_multiplier: float = Field(1.0, ge=1, le=100, description="rates are multiplied by this in the peak hours")
    peak_hours_utc: tuple[tuple[_Hour, _Hour], ...] = Field(
        (), max_length=24, description="peak windows as [start, end) UTC hours, e.g. [[1, 4], [6, 10]]"
    )

    @field_validator("peak_hours_utc", mode="before")
    @classmethod
    def _windows(cls, v):
        # Settings come back from JSON (flow parameters, job configs) with lists for tuples.
        return tuple(tuple(w) if isinstance(w, list) else w for w in v) if isinstance(v, (list, tuple)) else v

    @field_validator("peak_hours_utc")
    @classmethod
    def _hours(cls, v):
        if not all(a < b for a, b in v):
            raise ValueError("windows are [start, end) UTC hours: start < end")
        return v

    def multiplier(self, hour_utc: int | None) -> float:
        """The rate multiplier for a call sent in ``hour_utc``; None (unknown): the peak one."""
        if hour_utc is None:
            return self.peak_multiplier
        return self.peak_multiplier if any(a <= hour_utc < b for a, b in self.peak_hours_utc) else 1.0


# DeepSeek V4's published list prices, USD per million tokens (api-docs.deepseek.com/quick_start/pricing):
# v4-flash $0.14 input (cache miss) / $0.028 (cache hit) / $0.28 output; v4-pro $0.435 / $0.03625 /
# $0.87. Since the official V4 release (July 2026) DeepSeek bills peak hours, 09:00-12:00 and
# 14:00-18:00 Beijing time (01:00-04:00 and 06:00-10:00 UTC), at twice these rates; the ledger
# charges each call by the UTC hour it was sent in, and a budget reserves at the peak rate, so it
# stops early rather than late. `deepseek-chat`/`deepseek-reasoner` were retired on 2026-07-24 and
# have no price. Override or add models in config: teacher.prices.
DEEPSEEK_PEAK_HOURS_UTC = ((1, 4), (6, 10))
DEEPSEEK_PRICES = {
    "deepseek-v4-flash": Price(
        input_per_mtok=0.14,
        output_per_mtok=0.28,
        input_cache_hit_per_mtok=0.028,
        peak_multiplier=2.0,
        peak_hours_utc=DEEPSEEK_PEAK_HOURS_UTC,
    ),
    "deepseek-v4-pro": Price(
        input_per_mtok=0.435,
        output_per_mtok=0.87,
        input_cache_hit_per_mtok=0.03625,
        peak_multiplier=2.0,
        peak_hours_utc=DEEPSEEK_PEAK_HOURS_UTC,
    ),
}


def key_from_env() -> str | None:
    """The teacher's API key from the environment: the first of ``KEY_ENV`` that is set and non-empty.
    The one place that reads it; the orchestrator's Secret-block fallback calls this first."""
    for name in KEY_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return None


def operator_base_url() -> str:
    """The teacher endpoint the operator configured: ``$IRSFLOW_TEACHER_BASE_URL``, else DeepSeek's."""
    return os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL without user info; None for anything else."""
    try:
        u = urlsplit(url.strip())
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or u.username is not None or u.password is not None:
        return None
    return u.scheme, u.hostname.lower(), port


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def allowed_hosts() -> list[str]:
    return [h.strip().lower() for h in os.environ.get(ALLOWED_HOSTS_ENV, "").replace(" ", ",").split(",") if h.strip()]


def check_endpoint(url: str) -> str:
    """``url`` if the operator lets the teacher's key go there, else ``ValueError``: the origin of
    ``operator_base_url()``, or a host (``host`` or ``host:port``) in ``$IRSFLOW_TEACHER_ALLOWED_HOSTS``,
    over https (plain http only to a loopback host)."""
    origin = _origin(url)
    if origin is not None and origin == _origin(operator_base_url()):
        return url
    if origin is not None:
        scheme, host, port = origin
        for entry in allowed_hosts():
            try:
                e = urlsplit(f"//{entry}")
                e_host, e_port = (e.hostname or "").lower(), e.port
            except ValueError:
                continue
            if e_host == host and e_port in (None, port) and (scheme == "https" or _loopback(host)):
                return url
    listed = ", ".join(allowed_hosts()) or "none"
    raise ValueError(
        f"{url!r} is not an endpoint the operator allows the teacher's key to go to: the operator's "
        f"endpoint is {operator_base_url()} ({BASE_URL_ENV}); other hosts allowed ({ALLOWED_HOSTS_ENV}): "
        f"{listed}. Leave base_url out to use the operator's"
    )


def _key_from_env() -> SecretStr | None:
    key = key_from_env()
    return SecretStr(key) if key else None


def no_price_message(model: str) -> str:
    return (
        f"teacher.prices: no price for model {model!r}, and budget_usd is set: a budget cannot be kept "
        f'without one. Add teacher.prices.{model} = {{"input_per_mtok": USD, "output_per_mtok": USD}} '
        f"(USD per million tokens, from your provider's price list), or drop budget_usd"
    )


class TeacherConfig(BaseModel):
    """The teacher block of a request or flow run: everything but the key, so it can be stored,
    logged and shown in the UI. Defaults live here and nowhere else."""

    model_config = _STRICT
    base_url: str | None = Field(
        None,
        max_length=2048,
        description=(
            f"an OpenAI-compatible endpoint; None: the operator's, ${BASE_URL_ENV} (else {DEFAULT_BASE_URL}), "
            f"read where the job runs. Another one only if its host is in the operator's ${ALLOWED_HOSTS_ENV}: "
            "the key is never sent anywhere else"
        ),
    )
    model: str = Field(
        "deepseek-v4-flash", description="model ids change (deepseek-chat was retired 2026-07-24): keep in config"
    )
    thinking: Literal["disabled", "enabled", "omit"] = Field(
        "disabled",
        description="sent as extra_body {'thinking': {'type': ...}} (DeepSeek V4 thinks by default and bills "
        "the thinking as output); 'omit' sends nothing, for endpoints without the switch. Thinking counts against "
        "max_tokens: raise it when enabled",
    )
    template_id: str = Field("judge", pattern=_NAME)
    template_version: str = Field("v1", pattern=_NAME)
    concurrency: int = Field(16, ge=1, le=512)
    max_retries: int = Field(4, ge=0, le=20, description="retries per item after the first try")
    timeout_s: float = Field(60.0, gt=0, le=3600)
    backoff_s: float = Field(1.0, ge=0, le=600, description="first backoff; doubles per retry, with jitter")
    max_wait_s: float = Field(60.0, ge=0, le=3600, description="cap on any single wait, Retry-After included")
    temperature: float = Field(0.0, ge=0, le=2, description="ignored by DeepSeek in thinking mode")
    max_tokens: int = Field(
        512,
        ge=16,
        le=131_072,
        description="completion cap; also the per-call cost bound. A reply "
        "cut off at it is retried once with twice as many",
    )
    budget_usd: float | None = Field(None, gt=0, le=1_000_000, description="None = no cap")
    max_failed_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of an item set's judgements that may fail "
        "before a scoring phase fails (0: any failure fails it)",
    )
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEEPSEEK_PRICES), max_length=256)
    cache_path: Annotated[Path | None, Field(strict=False), WritableSQLite("judgements")] = Field(
        None,
        description="default <data dir>/teacher/cache.sqlite; elsewhere only inside the writable roots "
        "(the data dir, $IRSFLOW_WRITABLE_ROOTS), a new file or an earlier cache",
    )

    @field_validator("base_url")
    @classmethod
    def _operator_endpoint(cls, v: str | None) -> str | None:
        return v if v is None else check_endpoint(v)

    @model_validator(mode="after")
    def _price_needed_for_budget(self):
        if self.budget_usd is not None and self.model not in self.prices:
            raise ValueError(no_price_message(self.model))
        return self

    def endpoint(self) -> str:
        """The URL calls go to: ``base_url``, else the operator's (``operator_base_url()``)."""
        return self.base_url or operator_base_url()

    def resolved_cache_path(self) -> Path:
        return self.cache_path or data_dir() / "teacher" / "cache.sqlite"

    def with_key(self, api_key: str | SecretStr | None = None) -> TeacherSettings:
        """Settings for a run: ``api_key`` if given, else the environment (``KEY_ENV``)."""
        key = api_key if api_key is not None else _key_from_env()
        return TeacherSettings(**{f: getattr(self, f) for f in TeacherConfig.model_fields}, api_key=key)


class TeacherSettings(TeacherConfig):
    """A :class:`TeacherConfig` plus the API key (a ``SecretStr``: masked in repr and dumps)."""

    api_key: Annotated[SecretStr | None, Field(strict=False)] = Field(
        default_factory=_key_from_env, description=f"from ${' or $'.join(KEY_ENV)}", exclude=True
    )
