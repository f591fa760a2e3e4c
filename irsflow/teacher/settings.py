"""Teacher settings: the endpoint, model, thinking switch, retries, budget and prices (seed 001).

    cfg = TeacherConfig(model="deepseek-v4-pro", budget_usd=5.0)   # stored, logged, shown: no key
    settings = cfg.with_key()                                     # + the key from $DEEPSEEK_API_KEY

The defaults are DeepSeek V4's (api-docs.deepseek.com): thinking switched off for judging, its
published prices. A budget needs a price for the model: one without is refused before any call.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from irsflow.store import data_dir

KEY_ENV = ("IRSFLOW_TEACHER_API_KEY", "DEEPSEEK_API_KEY")
_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid")


class Price(BaseModel):
    model_config = _STRICT
    input_per_mtok: float = Field(ge=0, description="USD per million prompt tokens (cache miss)")
    output_per_mtok: float = Field(ge=0, description="USD per million completion tokens, reasoning included")
    input_cache_hit_per_mtok: float | None = Field(
        None, ge=0, description="USD per million prompt tokens served from the provider's context cache; None: as a miss")
    peak_multiplier: float = Field(1.0, ge=1, description="rates are multiplied by this in the peak hours")
    peak_hours_utc: tuple[tuple[int, int], ...] = Field(
        (), description="peak windows as [start, end) UTC hours, e.g. [[1, 4], [6, 10]]")

    @field_validator("peak_hours_utc", mode="before")
    @classmethod
    def _windows(cls, v):
        # Settings come back from JSON (flow parameters, job configs) with lists for tuples.
        return tuple(tuple(w) if isinstance(w, list) else w for w in v) if isinstance(v, (list, tuple)) else v

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
    "deepseek-v4-flash": Price(input_per_mtok=0.14, output_per_mtok=0.28, input_cache_hit_per_mtok=0.028,
                               peak_multiplier=2.0, peak_hours_utc=DEEPSEEK_PEAK_HOURS_UTC),
    "deepseek-v4-pro": Price(input_per_mtok=0.435, output_per_mtok=0.87, input_cache_hit_per_mtok=0.03625,
                             peak_multiplier=2.0, peak_hours_utc=DEEPSEEK_PEAK_HOURS_UTC),
}


def key_from_env() -> str | None:
    """The teacher's API key from the environment: the first of ``KEY_ENV`` that is set and non-empty.
    The one place that reads it; the orchestrator's Secret-block fallback calls this first."""
    for name in KEY_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _key_from_env() -> SecretStr | None:
    key = key_from_env()
    return SecretStr(key) if key else None


def no_price_message(model: str) -> str:
    return (f"teacher.prices: no price for model {model!r}, and budget_usd is set: a budget cannot be kept "
            f"without one. Add teacher.prices.{model} = {{\"input_per_mtok\": USD, \"output_per_mtok\": USD}} "
            f"(USD per million tokens, from your provider's price list), or drop budget_usd")


class TeacherConfig(BaseModel):
    """The teacher block of a request or flow run: everything but the key, so it can be stored,
    logged and shown in the UI. Defaults live here and nowhere else."""
    model_config = _STRICT
    base_url: str = Field("https://api.deepseek.com", description="any OpenAI-compatible endpoint")
    model: str = Field("deepseek-v4-flash", description="model ids change (deepseek-chat was retired 2026-07-24): keep in config")
    thinking: Literal["disabled", "enabled", "omit"] = Field(
        "disabled", description="sent as extra_body {'thinking': {'type': ...}} (DeepSeek V4 thinks by default and bills "
        "the thinking as output); 'omit' sends nothing, for endpoints without the switch. Thinking counts against "
        "max_tokens: raise it when enabled")
    template_id: str = "judge"
    template_version: str = "v1"
    concurrency: int = Field(16, ge=1, le=512)
    max_retries: int = Field(4, ge=0, le=20, description="retries per item after the first try")
    timeout_s: float = Field(60.0, gt=0)
    backoff_s: float = Field(1.0, ge=0, description="first backoff; doubles per retry, with jitter")
    max_wait_s: float = Field(60.0, ge=0, description="cap on any single wait, Retry-After included")
    temperature: float = Field(0.0, ge=0, le=2, description="ignored by DeepSeek in thinking mode")
    max_tokens: int = Field(512, ge=16, description="completion cap; also the per-call cost bound. A reply cut off "
                            "at it is retried once with twice as many")
    budget_usd: float | None = Field(None, gt=0, description="None = no cap")
    max_failed_share: float = Field(0.0, ge=0, le=1, description="share of an item set's judgements that may fail "
                                    "before a scoring phase fails (0: any failure fails it)")
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEEPSEEK_PRICES))
    cache_path: Annotated[Path | None, Field(strict=False)] = Field(None, description="default <data dir>/teacher/cache.sqlite")

    @model_validator(mode="after")
    def _price_needed_for_budget(self):
        if self.budget_usd is not None and self.model not in self.prices:
            raise ValueError(no_price_message(self.model))
        return self

    def resolved_cache_path(self) -> Path:
        return self.cache_path or data_dir() / "teacher" / "cache.sqlite"

    def with_key(self, api_key: str | SecretStr | None = None) -> "TeacherSettings":
        """Settings for a run: ``api_key`` if given, else the environment (``KEY_ENV``)."""
        key = api_key if api_key is not None else _key_from_env()
        return TeacherSettings(**{f: getattr(self, f) for f in TeacherConfig.model_fields}, api_key=key)


class TeacherSettings(TeacherConfig):
    """A :class:`TeacherConfig` plus the API key (a ``SecretStr``: masked in repr and dumps)."""
    api_key: Annotated[SecretStr | None, Field(strict=False)] = Field(
        default_factory=_key_from_env, description=f"from ${' or $'.join(KEY_ENV)}", exclude=True)
