"""Teacher client: an OpenAI-compatible LLM (DeepSeek V4 by default) judges answers (seed 001).

    from irsflow.teacher import TeacherSettings, judge_items
    items = [{"id": "q1", "prompt": "...", "answer": "...", "context": ""}]
    judgements = judge_items(items, TeacherSettings(budget_usd=5.0))   # key from $DEEPSEEK_API_KEY

Each item is sent once with the versioned template (``templates/judge_v1.json``) in JSON mode, with
DeepSeek's thinking switched off unless ``thinking`` says otherwise, and the reply is read by
``replies.py``: a verdict, or the kind of failure it is. A reply cut off at ``max_tokens``
(``finish_reason`` "length") is asked again once with twice the budget, then recorded as
``truncated``; blank replies, invalid JSON, schema mismatches and copies of the template's example
reply are retried (bounded), as are 429/5xx/timeouts (honouring ``Retry-After``). A failed item
gets no score - never a made-up one. Verdicts and unusable replies are cached in SQLite (see
``cache.py``), so a rerun over the same items makes zero API calls; failures with no reply
(endpoint down, blank) are not, so a rerun asks again. A budget cap stops the run before the next
call could exceed it; a model without a price is refused up front when there is a budget.

Scoring phases call ``judge_items`` as is: when more judgements failed than ``max_failed_share``
allows it raises ``TeacherUnavailable`` (retryable) or ``TeacherRepliesUnusable`` (not: the same
replies would come back), with the counts, instead of letting the phase finish on rules alone.
Labelling reports pass ``allow_failures=True`` and record every status. One CSV row per run goes
to ``teacher_usage.csv``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import random
import time
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from irsflow.errors import ConfigError, InputError
from irsflow.retry import failure_kind, retry_after_s, status_code
from irsflow.store import atomic_write_text, utc_now
from irsflow.teacher.cache import JudgementCache, judgement_key
from irsflow.teacher.judgements import Judgement, TeacherRepliesUnusable, TeacherUnavailable, check_failures  # noqa: F401
from irsflow.teacher.replies import (
    BUDGET_STOPPED,
    FAILED,
    FAILURES,
    MISSING,
    OK,
    REPLY_FAILURES,
    TRUNCATED,
    Outcome,
    Tokens,
    read_reply,
)
from irsflow.teacher.replies import read_usage as usage_tokens
from irsflow.teacher.settings import (  # noqa: F401 (re-exported)
    DEEPSEEK_PRICES,
    KEY_ENV,
    Price,
    TeacherConfig,
    TeacherSettings,
    check_endpoint,
    no_price_message,
)

log = logging.getLogger("irsflow.teacher")
TEMPLATES = Path(__file__).parent / "templates"


@cache
def load_template(template_id: str, version: str) -> dict:
    path = TEMPLATES / f"{template_id}_{version}.json"
    if not path.exists():
        raise ConfigError(f"teacher.template_version: no template {path.name} in {TEMPLATES}")
    tpl = json.loads(path.read_text(encoding="utf-8"))
    if tpl.get("version") != version or "json" not in tpl["system"] + tpl["user"]:
        raise ConfigError(f"teacher template {path.name}: version mismatch or no word 'json' (JSON mode needs it)")
    example = tpl.get("example_reply")
    if example is not None and json.dumps(example, ensure_ascii=False) not in tpl["user"]:
        raise ConfigError(f"teacher template {path.name}: example_reply is not the example shown in 'user'")
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


def _from_cache(item_id: str, key: str, hit: dict) -> Judgement:
    if hit["status"] == OK:
        return Judgement(id=item_id, status=OK, key=key, cached=True, **hit["reply"])
    return Judgement(id=item_id, status=hit["status"], key=key, cached=True, error=hit["error"])


def _usable(hit: dict | None, settings: TeacherConfig) -> bool:
    """A cached verdict always serves; a cached unusable reply only for the same ``max_tokens``
    (raising it is how a user asks for truncated replies to be tried again)."""
    return hit is not None and (hit["status"] == OK or hit["max_tokens"] == settings.max_tokens)


class _Run:
    """State of one judging run: budget accounting, counters, the client and the cache."""

    def __init__(self, settings: TeacherSettings, cache: JudgementCache):
        self.s, self.cache = settings, cache
        self.tpl = load_template(settings.template_id, settings.template_version)
        self.example = self.tpl.get("example_reply")
        self.price = settings.prices.get(settings.model)
        self.spent = self.reserved = 0.0
        self.stopped = False
        self.counts = Counter(calls=0, cache_hits=0, tokens_in=0, tokens_out=0, ok=0, failures=0, skipped=0)
        self.client = None
        self.budget_changed = asyncio.Condition()
        self.secret = settings.api_key.get_secret_value() if settings.api_key else ""

    def cost(self, t: Tokens, hour_utc: int | None = None) -> float:
        """USD for ``t`` sent in ``hour_utc`` (peak-hour multiplier); None: at the peak rate (bounds)."""
        if self.price is None:
            return 0.0
        p = self.price
        hit_rate = p.input_per_mtok if p.input_cache_hit_per_mtok is None else p.input_cache_hit_per_mtok
        return (
            ((t.prompt - t.cache_hit) * p.input_per_mtok + t.cache_hit * hit_rate + t.completion * p.output_per_mtok)
            / 1e6
            * p.multiplier(hour_utc)
        )

    def bound(self, messages: list[dict], max_tokens: int) -> float:
        # Byte-level BPE never yields more tokens than UTF-8 bytes; +16 per message for the chat
        # template's role markers. Output (thinking included) is bounded by max_tokens, every
        # prompt token is charged as a cache miss. So this never underestimates.
        tokens_in = sum(len(m["content"].encode("utf-8")) + 16 for m in messages)
        return self.cost(Tokens(prompt=tokens_in, completion=max_tokens))

    def request(self, messages: list[dict], max_tokens: int) -> dict:
        kw = dict(
            model=self.s.model,
            messages=messages,
            temperature=self.s.temperature,
            max_tokens=max_tokens,
            response_format={"type": "json_object"},
        )
        if self.s.thinking != "omit":  # DeepSeek's switch; the openai SDK sends extra_body's keys as is
            kw["extra_body"] = {"thinking": {"type": self.s.thinking}}
        return kw

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def wait_s(self, attempt: int, err: BaseException | None = None) -> float:
        headers = getattr(getattr(err, "response", None), "headers", None)
        hinted = retry_after_s(headers)
        wait = hinted if hinted is not None else self.s.backoff_s * 2**attempt * (0.5 + random.random())
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

    async def call(self, messages: list[dict], max_tokens: int):
        """One API call, billed: (response, None) or (None, error); None, None when the budget stops it."""
        bound = self.bound(messages, max_tokens)
        if not await self.reserve(bound):
            return None, None
        self.counts["calls"] += 1
        sent_hour = datetime.now(UTC).hour  # DeepSeek bills by the hour the call is sent in
        try:
            resp = await self.client.chat.completions.create(**self.request(messages, max_tokens))
        except Exception as e:  # noqa: BLE001 - classified by the caller
            await self.release(bound)
            return None, e
        t = usage_tokens(resp.usage)
        cost = bound if resp.usage is None else self.cost(t, sent_hour)  # no usage: charge the bound, never less
        self.counts.update(
            tokens_in=t.prompt, tokens_out=t.completion, tokens_reasoning=t.reasoning, tokens_cache_hit=t.cache_hit
        )
        self.spent += cost  # before the release, so waiters never see neither
        await self.release(bound)
        return (resp, cost, t), None

    def error_text(self, err: BaseException) -> str:
        code = status_code(err)
        if code in (401, 403):
            raise ConfigError(f"teacher.api_key: {self.s.endpoint()} refused it (HTTP {code})") from None
        if code == 402:  # DeepSeek: Insufficient Balance; retrying cannot help
            raise ConfigError(
                f"teacher: {self.s.endpoint()} answered HTTP 402 (insufficient balance): top up the "
                f"account of teacher.api_key"
            ) from None
        return self.redact(f"{type(err).__name__}" + (f" (HTTP {code})" if code else ""))

    async def judge(self, item: dict, key: str, sem: asyncio.Semaphore) -> Judgement:
        messages = _messages(self.tpl, item)
        max_tokens, retries_left, grown, attempt = self.s.max_tokens, self.s.max_retries, False, 0
        outcome, raw = Outcome(FAILED, error="failed"), None
        async with sem:
            while True:
                attempt += 1
                done, err = await self.call(messages, max_tokens)
                if done is None and err is None:
                    self.counts["skipped"] += 1
                    return Judgement(
                        id=item["id"],
                        status=BUDGET_STOPPED,
                        key=key,
                        attempts=attempt - 1,
                        error="budget cap reached before this item's next call",
                    )
                if err is not None:
                    outcome = Outcome(FAILED, error=self.error_text(err))
                    if failure_kind(err) == "transient" and retries_left:
                        retries_left -= 1
                        await asyncio.sleep(self.wait_s(attempt - 1, err))
                        continue
                    break
                resp, cost, tokens = done
                outcome = read_reply(resp, self.example)
                raw = (resp.choices[0].message.content or "")[:4000] if resp.choices else ""
                if outcome.status == OK:
                    self.cache.put(self.row(item, key, OK, outcome.reply.model_dump(), "", tokens, cost))
                    self.counts["ok"] += 1
                    return Judgement(
                        id=item["id"],
                        status=OK,
                        key=key,
                        attempts=attempt,
                        finish_reason=outcome.finish_reason,
                        **outcome.reply.model_dump(),
                    )
                if outcome.status == TRUNCATED:
                    if grown:  # twice the budget did not suffice either: record it
                        break
                    grown, max_tokens = True, max_tokens * 2
                    log.info("teacher: item %s cut off at max_tokens; asking once more with %d", item["id"], max_tokens)
                    continue
                if not retries_left:
                    break
                retries_left -= 1
                await asyncio.sleep(self.wait_s(attempt - 1) / (1 if outcome.status == FAILED else 4))
        if outcome.status in REPLY_FAILURES:  # the judge's answer: the same would come back, so keep it
            reply = outcome.reply.model_dump() if outcome.reply else {"raw": raw}
            self.cache.put(self.row(item, key, outcome.status, reply, outcome.error, tokens, cost))
        self.counts["failures"] += 1
        self.counts[outcome.status] += 1
        log.warning("teacher: item %s %s after %d attempts: %s", item["id"], outcome.status, attempt, outcome.error)
        return Judgement(
            id=item["id"],
            status=outcome.status,
            key=key,
            attempts=attempt,
            error=outcome.error,
            finish_reason=outcome.finish_reason,
        )

    def row(self, item: dict, key: str, status: str, reply: dict, error: str, t: Tokens, cost: float) -> dict:
        return {
            "key": key,
            "item_id": item["id"],
            "model": self.s.model,
            "template_version": self.s.template_version,
            "prompt": item["prompt"],
            "answer": item["answer"],
            "context": item["context"],
            "reply": reply,
            "tokens_in": t.prompt,
            "tokens_out": t.completion,
            "cost_usd": cost,
            "created_at": utc_now(),
            "status": status,
            "error": error or None,
            "max_tokens": self.s.max_tokens,
        }


def _require_price(settings: TeacherConfig) -> None:
    # also here, not only in the validator: model_copy(update=...) skips validation
    if settings.budget_usd is not None and settings.model not in settings.prices:
        raise ConfigError(no_price_message(settings.model))


async def ajudge_items(
    items: list[dict], settings: TeacherSettings, usage_path: Path | None = None, allow_failures: bool = False
) -> list[Judgement]:
    """Async form of :func:`judge_items`."""
    from openai import AsyncOpenAI  # imported here so configs load without the SDK

    items = _check_items(items)
    _require_price(settings)
    started = time.monotonic()
    cache = JudgementCache(settings.resolved_cache_path())
    run = _Run(settings, cache)
    try:
        keys = [_key(settings, it) for it in items]
        results: dict[str, Judgement] = {}
        todo: dict[str, dict] = {}  # one call per distinct key, even if several ids share it
        for it, key in zip(items, keys):
            hit = cache.get(key)
            if _usable(hit, settings):
                run.counts["cache_hits"] += 1
                results[it["id"]] = _from_cache(it["id"], key, hit)
            else:
                todo.setdefault(key, it)
        if todo:
            if not run.secret:
                raise ConfigError(f"teacher.api_key: not set (export {' or '.join(KEY_ENV)})")
            try:  # again here: settings copied or built without validation must not carry the key elsewhere
                check_endpoint(settings.endpoint())
            except ValueError as err:
                raise ConfigError(f"teacher.base_url: {err}") from None
            if run.price is None:
                log.warning(
                    "teacher: no price for model %r: teacher_usage.csv records its tokens but no cost "
                    "(set teacher.prices.%s)",
                    settings.model,
                    settings.model,
                )
            run.client = AsyncOpenAI(
                api_key=run.secret, base_url=settings.endpoint(), timeout=settings.timeout_s, max_retries=0
            )  # our own retries: bounded, Retry-After, budget-aware
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
    _append_usage(
        usage_path or settings.resolved_cache_path().parent / "teacher_usage.csv",
        settings,
        run,
        out,
        time.monotonic() - started,
    )
    log.info(
        "teacher: %d items, %d calls, %d cache hits, %d failed, %d budget-stopped, %.4f USD",
        len(items),
        run.counts["calls"],
        run.counts["cache_hits"],
        run.counts["failures"],
        run.counts["skipped"],
        run.spent,
    )
    if not allow_failures:
        check_failures(out, settings)
    return out


def judge_items(
    items: list[dict], settings: TeacherSettings, usage_path: Path | None = None, allow_failures: bool = False
) -> list[Judgement]:
    """Judge ``items`` ({"id", "prompt", "answer", "context"?}) in input order; one
    :class:`Judgement` per item (status ok, budget_stopped or a failure status of ``replies.py``).
    Cached judgements cost nothing. Raises :class:`TeacherUnavailable` /
    :class:`TeacherRepliesUnusable` when more failed than ``settings.max_failed_share``, unless
    ``allow_failures`` (reports that record every status)."""
    return asyncio.run(ajudge_items(items, settings, usage_path, allow_failures))


def cached_judgements(items: list[dict], settings: TeacherConfig) -> list[Judgement]:
    """What the cache already holds for ``items``, without any API call (no key needed): the
    cached status (``cached=True``) or ``missing``. Reports and inspection use this."""
    items = _check_items(items)
    path = settings.resolved_cache_path()
    if not path.exists():
        return [Judgement(id=it["id"], status=MISSING, key=_key(settings, it)) for it in items]
    cache = JudgementCache(path)
    try:
        out = []
        for it in items:
            key = _key(settings, it)
            hit = cache.get(key)
            out.append(
                _from_cache(it["id"], key, hit)
                if _usable(hit, settings)
                else Judgement(id=it["id"], status=MISSING, key=key)
            )
        return out
    finally:
        cache.close()


def _key(settings: TeacherConfig, it: dict) -> str:
    return judgement_key(settings.model, settings.template_version, it["prompt"], it["answer"], it["context"])


USAGE_FIELDS = [
    "run_at",
    "model",
    "thinking",
    "template_version",
    "items",
    "calls",
    "cache_hits",
    "ok",
    "failures",
    *REPLY_FAILURES,
    "budget_stopped_items",
    "tokens_in",
    "tokens_cache_hit",
    "tokens_out",
    "tokens_reasoning",
    "cost_usd",
    "budget_usd",
    "budget_stopped",
    "wall_s",
]


def _append_usage(path: Path, s: TeacherSettings, run: _Run, out: list[Judgement], wall_s: float) -> None:
    c, status = run.counts, Counter(j.status for j in out)  # per item, cached ones included
    row = {
        "run_at": utc_now(),
        "model": s.model,
        "thinking": s.thinking,
        "template_version": s.template_version,
        "items": len(out),
        "calls": c["calls"],
        "cache_hits": c["cache_hits"],
        "ok": status[OK],
        "failures": sum(status[k] for k in FAILURES),
        **{k: status[k] for k in REPLY_FAILURES},
        "budget_stopped_items": status[BUDGET_STOPPED],
        "tokens_in": c["tokens_in"],
        "tokens_cache_hit": c["tokens_cache_hit"],
        "tokens_out": c["tokens_out"],
        "tokens_reasoning": c["tokens_reasoning"],
        # no price: the cost is unknown, not zero
        "cost_usd": f"{run.spent:.6f}" if run.price is not None or not c["calls"] else "",
        "budget_usd": "" if s.budget_usd is None else s.budget_usd,
        "budget_stopped": run.stopped,
        "wall_s": f"{wall_s:.3f}",
    }
    old = read_usage(path) if path.exists() and path.stat().st_size else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=USAGE_FIELDS, restval="", extrasaction="ignore")
    writer.writeheader()  # rewritten whole (atomically), so a ledger from before new columns stays aligned
    writer.writerows(old)
    writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def read_usage(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
