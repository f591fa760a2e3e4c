"""Teacher client: an OpenAI-compatible LLM (DeepSeek by default) judges answers (seed 001).

    from irsflow.teacher import TeacherSettings, judge_items
    items = [{"id": "q1", "prompt": "...", "answer": "...", "context": ""}]
    judgements = judge_items(items, TeacherSettings(budget_usd=5.0))   # key from $DEEPSEEK_API_KEY

Each item is sent once with the versioned template (``templates/judge_v1.json``) in JSON mode and
the reply is validated against :class:`TeacherReply`. Blank content, invalid JSON and schema
violations are retried (bounded), as are 429/5xx/timeouts (honouring ``Retry-After``); an item that
still fails is returned as ``status="failed"`` - never a made-up score - and is NOT cached, so a
rerun tries it again. Successes are cached in SQLite (see ``cache.py``): a rerun over the same
items makes zero API calls. A budget cap stops the run before the next call could exceed it.
One CSV row per run goes to ``teacher_usage.csv``.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import random
import time
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from irsflow.errors import ConfigError, InputError
from irsflow.retry import failure_kind, status_code
from irsflow.store import atomic_write_text, data_dir, utc_now
from irsflow.teacher.cache import JudgementCache, judgement_key

log = logging.getLogger("irsflow.teacher")
TEMPLATES = Path(__file__).parent / "templates"
KEY_ENV = ("IRSFLOW_TEACHER_API_KEY", "DEEPSEEK_API_KEY")
_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid")


class Price(BaseModel):
    model_config = _STRICT
    input_per_mtok: float = Field(ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million completion tokens")


def _key_from_env() -> SecretStr | None:
    for name in KEY_ENV:
        if os.environ.get(name):
            return SecretStr(os.environ[name])
    return None


class TeacherConfig(BaseModel):
    """The teacher block of a request or flow run: everything but the key, so it can be stored,
    logged and shown in the UI. Defaults live here and nowhere else."""
    model_config = _STRICT
    base_url: str = Field("https://api.deepseek.com", description="any OpenAI-compatible endpoint")
    model: str = Field("deepseek-flash", description="model names change (deepseek-chat was retired): keep in config")
    template_id: str = "judge"
    template_version: str = "v1"
    concurrency: int = Field(16, ge=1, le=512)
    max_retries: int = Field(4, ge=0, le=20, description="retries per item after the first try")
    timeout_s: float = Field(60.0, gt=0)
    backoff_s: float = Field(1.0, ge=0, description="first backoff; doubles per retry, with jitter")
    max_wait_s: float = Field(60.0, ge=0, description="cap on any single wait, Retry-After included")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(512, ge=16, description="completion cap; also the per-call cost bound")
    budget_usd: float | None = Field(None, gt=0, description="None = no cap")
    prices: dict[str, Price] = Field(default_factory=lambda: {
        # DeepSeek list prices (cache-miss input) at the time of writing; override in config.
        "deepseek-flash": Price(input_per_mtok=0.28, output_per_mtok=0.42),
        "deepseek-v4-pro": Price(input_per_mtok=0.55, output_per_mtok=2.19)})
    cache_path: Annotated[Path | None, Field(strict=False)] = Field(None, description="default <data dir>/teacher/cache.sqlite")

    @model_validator(mode="after")
    def _price_needed_for_budget(self):
        if self.budget_usd is not None and self.model not in self.prices:
            raise ValueError(f"prices: no price for model {self.model!r}, needed by budget_usd")
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


class TeacherReply(BaseModel):
    """The JSON object the teacher must return; anything else is a retryable bad reply."""
    model_config = ConfigDict(strict=True, extra="ignore")
    teacher_score: float = Field(ge=0, le=1)
    safety_flag: bool
    comment: str
    best_answer: str | None = None


class Judgement(BaseModel):
    id: str
    status: Literal["ok", "failed", "budget_stopped", "missing"]  # missing: cache-only lookup found none
    teacher_score: float | None = None
    safety_flag: bool | None = None
    comment: str | None = None
    best_answer: str | None = None
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    key: str


@lru_cache(maxsize=None)
def load_template(template_id: str, version: str) -> dict:
    path = TEMPLATES / f"{template_id}_{version}.json"
    if not path.exists():
        raise ConfigError(f"teacher.template_version: no template {path.name} in {TEMPLATES}")
    tpl = json.loads(path.read_text(encoding="utf-8"))
    if tpl.get("version") != version or "json" not in tpl["system"] + tpl["user"]:
        raise ConfigError(f"teacher template {path.name}: version mismatch or no word 'json' (JSON mode needs it)")
    return tpl


def _messages(tpl: dict, item: dict) -> list[dict]:
    # str.replace, not str.format: the template's JSON example is full of braces.
    user = tpl["user"]
    for field in ("context", "prompt", "answer"):
        user = user.replace("{{" + field + "}}", item.get(field) or "")
    return [{"role": "system", "content": tpl["system"]}, {"role": "user", "content": user}]


def _check_items(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not all(isinstance(it.get(k), str) for k in ("id", "prompt", "answer")):
            raise InputError(f"teacher item {i}: needs string fields id, prompt, answer")
        if not isinstance(it.get("context") or "", str):
            raise InputError(f"teacher item {it['id']!r}: context must be a string")
        if it["id"] in seen:
            raise InputError(f"teacher item {it['id']!r}: duplicate id")
        seen.add(it["id"])
        out.append({**it, "context": it.get("context") or ""})
    return out


def _retry_after(err: BaseException) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:  # HTTP-date form
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class _Run:
    """State of one judging run: budget accounting, counters, the client and the cache."""

    def __init__(self, settings: TeacherSettings, cache: JudgementCache):
        self.s, self.cache = settings, cache
        self.tpl = load_template(settings.template_id, settings.template_version)
        self.price = settings.prices.get(settings.model)
        self.spent = self.reserved = 0.0
        self.stopped = False
        self.counts = dict(calls=0, cache_hits=0, tokens_in=0, tokens_out=0, ok=0, failures=0, skipped=0)
        self.client = None
        self.budget_changed = asyncio.Condition()
        self.secret = settings.api_key.get_secret_value() if settings.api_key else ""

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        if self.price is None:
            return 0.0
        return (tokens_in * self.price.input_per_mtok + tokens_out * self.price.output_per_mtok) / 1e6

    def bound(self, messages: list[dict]) -> float:
        # Byte-level BPE never yields more tokens than UTF-8 bytes; +16 per message for the chat
        # template's role markers. Output is bounded by max_tokens. So this never underestimates.
        tokens_in = sum(len(m["content"].encode("utf-8")) + 16 for m in messages)
        return self.cost(tokens_in, self.s.max_tokens)

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def wait_s(self, attempt: int, err: BaseException | None = None) -> float:
        hinted = _retry_after(err) if err is not None else None
        wait = hinted if hinted is not None else self.s.backoff_s * 2 ** attempt * (0.5 + random.random())
        return min(wait, self.s.max_wait_s)

    async def reserve(self, bound: float) -> bool:
        """Reserve ``bound`` USD for one call. Waits while in-flight calls' reservations are what
        block it (they usually cost far less than their bound); returns False, and stops the run,
        once even the spent money plus this bound would exceed the cap."""
        cap = self.s.budget_usd
        if cap is None:
            return not self.stopped
        async with self.budget_changed:
            while not self.stopped and self.spent + bound <= cap < self.spent + self.reserved + bound:
                await self.budget_changed.wait()
            if self.stopped or self.spent + bound > cap:
                if not self.stopped:
                    log.warning("teacher budget: next call could exceed %.4f USD; stopping", cap)
                self.stopped = True
                self.budget_changed.notify_all()
                return False
            self.reserved += bound
            return True

    async def release(self, bound: float) -> None:
        async with self.budget_changed:
            self.reserved -= bound
            self.budget_changed.notify_all()

    async def judge(self, item: dict, key: str, sem: asyncio.Semaphore) -> Judgement:
        messages = _messages(self.tpl, item)
        error, attempt, budget_cut = "", 0, False
        async with sem:
            for attempt in range(1, self.s.max_retries + 2):
                bound = self.bound(messages)
                if not await self.reserve(bound):
                    budget_cut = True
                    break
                self.counts["calls"] += 1
                err, cost, t_in, t_out = None, 0.0, 0, 0
                try:
                    resp = await self.client.chat.completions.create(
                        model=self.s.model, messages=messages, temperature=self.s.temperature,
                        max_tokens=self.s.max_tokens, response_format={"type": "json_object"})
                    if resp.usage is None:  # cannot know: charge the bound, never less
                        cost = bound
                    else:
                        t_in, t_out = resp.usage.prompt_tokens, resp.usage.completion_tokens
                        cost = self.cost(t_in, t_out)
                    self.counts["tokens_in"] += t_in
                    self.counts["tokens_out"] += t_out
                    self.spent += cost  # before the release, so waiters never see neither
                except Exception as e:  # noqa: BLE001 - classified just below
                    err = e
                finally:
                    await self.release(bound)
                if err is not None:
                    kind, code = failure_kind(err), status_code(err)
                    error = self.redact(f"{type(err).__name__}" + (f" (HTTP {code})" if code else ""))
                    if code in (401, 403):
                        raise ConfigError(f"teacher.api_key: {self.s.base_url} refused it (HTTP {code})") from None
                    if kind != "transient":
                        break
                    await asyncio.sleep(self.wait_s(attempt - 1, err))
                    continue
                content = (resp.choices[0].message.content or "").strip() if resp.choices else ""
                try:
                    if not content:
                        raise ValueError("blank content")
                    reply = TeacherReply.model_validate(json.loads(content))
                except (ValueError, ValidationError) as e:
                    # JSONDecodeError is a ValueError; keep the message short and key-free.
                    error = self.redact(f"bad reply: {str(e).splitlines()[0][:200]}")
                    await asyncio.sleep(self.wait_s(attempt - 1) / 4)
                    continue
                self.cache.put({"key": key, "item_id": item["id"], "model": self.s.model,
                                "template_version": self.s.template_version, "prompt": item["prompt"],
                                "answer": item["answer"], "context": item["context"],
                                "reply": reply.model_dump(), "tokens_in": t_in, "tokens_out": t_out,
                                "cost_usd": cost, "created_at": utc_now()})
                self.counts["ok"] += 1
                return Judgement(id=item["id"], status="ok", key=key, attempts=attempt, **reply.model_dump())
        if budget_cut:
            self.counts["skipped"] += 1
            return Judgement(id=item["id"], status="budget_stopped", key=key, attempts=attempt - 1,
                             error="budget cap reached before this item's next call")
        self.counts["failures"] += 1
        log.warning("teacher: item %s failed after %d attempts: %s", item["id"], attempt, error)
        return Judgement(id=item["id"], status="failed", key=key, attempts=attempt, error=error or "failed")


async def ajudge_items(items: list[dict], settings: TeacherSettings, usage_path: Path | None = None) -> list[Judgement]:
    """Async form of :func:`judge_items`."""
    from openai import AsyncOpenAI  # imported here so configs load without the SDK

    items = _check_items(items)
    started = time.monotonic()
    cache = JudgementCache(settings.resolved_cache_path())
    run = _Run(settings, cache)
    try:
        keys = [_key(settings, it) for it in items]
        results: dict[str, Judgement] = {}
        todo: dict[str, dict] = {}  # one call per distinct key, even if several ids share it
        for it, key in zip(items, keys):
            hit = cache.get(key)
            if hit is not None:
                run.counts["cache_hits"] += 1
                results[it["id"]] = Judgement(id=it["id"], status="ok", key=key, cached=True, **hit["reply"])
            else:
                todo.setdefault(key, it)
        if todo:
            if not run.secret:
                raise ConfigError(f"teacher.api_key: not set (export {' or '.join(KEY_ENV)})")
            run.client = AsyncOpenAI(api_key=run.secret, base_url=settings.base_url, timeout=settings.timeout_s,
                                     max_retries=0)  # our own retries: bounded, Retry-After, budget-aware
            sem = asyncio.Semaphore(settings.concurrency)
            try:
                done = await asyncio.gather(*(run.judge(it, key, sem) for key, it in todo.items()))
            finally:
                await run.client.close()
            by_key = {j.key: j for j in done}
            for it, key in zip(items, keys):
                if it["id"] not in results:
                    results[it["id"]] = by_key[key].model_copy(update={"id": it["id"]})
        out = [results[it["id"]] for it in items]
    finally:
        cache.close()
    _append_usage(usage_path or settings.resolved_cache_path().parent / "teacher_usage.csv", settings, run,
                  len(items), time.monotonic() - started)
    log.info("teacher: %d items, %d calls, %d cache hits, %d failed, %d budget-stopped, %.4f USD",
             len(items), run.counts["calls"], run.counts["cache_hits"], run.counts["failures"],
             run.counts["skipped"], run.spent)
    return out


def judge_items(items: list[dict], settings: TeacherSettings, usage_path: Path | None = None) -> list[Judgement]:
    """Judge ``items`` ({"id", "prompt", "answer", "context"?}) in input order. Cached successes
    cost nothing; returns one :class:`Judgement` per item with status ok / failed / budget_stopped."""
    return asyncio.run(ajudge_items(items, settings, usage_path))


def cached_judgements(items: list[dict], settings: TeacherConfig) -> list[Judgement]:
    """What the cache already holds for ``items``, without any API call (no key needed): ``ok``
    (``cached=True``) or ``missing``. Reports and inspection use this."""
    items = _check_items(items)
    path = settings.resolved_cache_path()
    if not path.exists():
        return [Judgement(id=it["id"], status="missing", key=_key(settings, it)) for it in items]
    cache = JudgementCache(path)
    try:
        out = []
        for it in items:
            key = _key(settings, it)
            hit = cache.get(key)
            out.append(Judgement(id=it["id"], status="ok", key=key, cached=True, **hit["reply"]) if hit
                       else Judgement(id=it["id"], status="missing", key=key))
        return out
    finally:
        cache.close()


def _key(settings: TeacherConfig, it: dict) -> str:
    return judgement_key(settings.model, settings.template_version, it["prompt"], it["answer"], it["context"])


USAGE_FIELDS = ["run_at", "model", "template_version", "items", "calls", "cache_hits", "ok", "failures",
                "budget_stopped_items", "tokens_in", "tokens_out", "cost_usd", "budget_usd", "budget_stopped", "wall_s"]


def _append_usage(path: Path, s: TeacherSettings, run: _Run, n_items: int, wall_s: float) -> None:
    c = run.counts
    row = {"run_at": utc_now(), "model": s.model, "template_version": s.template_version, "items": n_items,
           "calls": c["calls"], "cache_hits": c["cache_hits"], "ok": c["ok"] + c["cache_hits"],
           "failures": c["failures"], "budget_stopped_items": c["skipped"], "tokens_in": c["tokens_in"],
           "tokens_out": c["tokens_out"], "cost_usd": f"{run.spent:.6f}",
           "budget_usd": "" if s.budget_usd is None else s.budget_usd, "budget_stopped": run.stopped,
           "wall_s": f"{wall_s:.3f}"}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=USAGE_FIELDS)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if not old:
        writer.writeheader()
    writer.writerow(row)
    atomic_write_text(path, old + buf.getvalue())


def read_usage(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
