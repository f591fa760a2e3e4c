"""Extract users' thumbs up/down from Langfuse, with the conversations (traces) they rate.

    settings = LangfuseSettings.from_env()                # LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY, ...
    with Extraction(settings, load_state(path)) as ext:
        for record in ext:                                # streamed, one per (trace, feedback)
            outputs.add(record)
        ...                                               # write the run's outputs first, then:
        save_state(path, ext.next_state())

A record: ``{"trace_id", "score_id", "label": "up"|"down"|None, "score_value", "score_timestamp",
"comment", "trace": {"id", "timestamp", "name", "input", "output", "metadata", "session_id",
"user_id", "tags"}}``; input/output are the trace's raw JSON. ``label`` None: a value that is in
neither ``up_values`` nor ``down_values`` (the caller counts those).

Which API. Langfuse v3 serves the legacy read API, Langfuse v4 (Cloud) its replacement; each is a
``Generation`` object (``GENERATIONS``: ``langfuse_v3.LegacyApi``, ``langfuse_v4.V4Api``) behind
one interface. ``api_version="auto"`` starts with the one that answered last run (kept in the
state; first run: v3) and, if that generation's first request answers 404/410 (a retired route,
e.g. Cloud's 410 ``LEGACY_API_UNAVAILABLE_FOR_NEW_ORGANIZATION``), switches to the other once,
logs it and stays there: a dead route is hit once per state file, not once per page. If both
answer 404/410 the run fails at once with ``LangfuseServerSetupError`` naming the server settings
to switch on (a self-hosted v3.179.x in events_only mode), before any output is written.

How. Feedback drives the extraction: scores named ``score_name`` in the window ``[from, to)``,
newest first, every page to the end (short or empty pages included), then their traces. Traces
come one of two ways, chosen per run (``trace_fetch="auto"``: from the two totals on v3, from the
rates of the two first pages on v4, whose cursor pages carry no totals): "list" walks the traces
over the same window (widened by ``trace_lookback``), newest first, in step with the scores, and
matches as it goes: a trace is listed once, and only scores whose trace is not yet matched are
held (about ``trace_lookback`` worth of feedback). Traces older than the lookback are fetched by
id. "get" fetches every trace by id (``get_workers`` at a time): cheaper when feedback is sparse
among traces. Memory does not grow with the number of traces either way.

HTTP, settings and retries: ``irsflow.feedback.langfuse_api`` (names re-exported here).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from irsflow.errors import IrsflowError
from irsflow.feedback.langfuse_api import (
    RESTART,
    SERVER_FLAGS,
    Generation,
    LangfuseAuthError,
    LangfuseError,
    LangfuseHttp,
    LangfuseServerSetupError,
    LangfuseSettings,
    Page,
    parse_time,
)
from irsflow.feedback.langfuse_v3 import LegacyApi
from irsflow.feedback.langfuse_v4 import V4Api
from irsflow.feedback.state import ExtractState, as_utc, load_state, plan_window, save_state
from irsflow.retry import retry_after_s

GENERATIONS: dict[str, type[LegacyApi] | type[V4Api]] = {"v3": LegacyApi, "v4": V4Api}
__all__ = [
    "LangfuseSettings",
    "Extraction",
    "GENERATIONS",
    "ExtractState",
    "LangfuseError",
    "LangfuseAuthError",
    "LangfuseServerSetupError",
    "label_of",
    "retry_after_s",
    "plan_window",
    "load_state",
    "save_state",
]
log = logging.getLogger("irsflow.feedback.langfuse")

_SKEW = timedelta(minutes=1)  # a trace's clock may run this far ahead of its feedback's clock
# Auto mode lists traces when pages x this <= feedback count. On the fake server a 100-trace page
# costs about as much as 6 GETs (4 in flight); a real server pays more per GET (three lookups).
_LIST_PAGE_COST = 4
_SEEN_PAGES = 20  # within-run dedupe remembers the ids of this many recent score pages


def label_of(settings: LangfuseSettings, value: float | None, string_value: str | None) -> str | None:
    def hit(values: tuple) -> bool:
        return any(
            v == string_value if isinstance(v, str) else (value is not None and float(v) == value) for v in values
        )

    return "up" if hit(settings.up_values) else "down" if hit(settings.down_values) else None


def _neither(host: str, errors: dict[str, LangfuseError]) -> LangfuseError:
    """The error when both generations failed their first score request. Both routes gone (404/410)
    is no outage: either LANGFUSE_HOST is wrong or the server keeps its v4 routes off (a self-hosted
    v3.179.x in events_only mode without its flags, see ``langfuse_api.SERVER_FLAGS``)."""
    v3, v4 = errors["v3"], errors["v4"]
    text = f"Langfuse at {host} serves neither read API: v3 answered HTTP {v3.status_code}, v4 HTTP {v4.status_code}"
    if v3.status_code not in LegacyApi.dead_codes or v4.status_code not in V4Api.dead_codes:
        return LangfuseError(f"{text}: {v4}", v4.status_code)  # an outage: retried as usual
    why = (
        "its legacy routes are off (LANGFUSE_MIGRATION_V4_WRITE_MODE=events_only) and "
        if "events_only" in str(v3)
        else ""
    )
    return LangfuseServerSetupError(
        f"{text}. If LANGFUSE_HOST is right, {why}the server keeps GET /api/public/v3/scores switched off: set "
        f"{SERVER_FLAGS} {RESTART} (or upgrade it to Langfuse v4: scores API always on, opt-in true by default). "
        f"v3: {v3} | v4: {v4}",
        v4.status_code,
    )


def _iso(t: datetime) -> str:
    return as_utc(t).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_time = parse_time


@dataclass(slots=True)
class _Fb:
    """One feedback score. ``done``: handed out by an earlier run; kept only to outrank older ones."""

    id: str
    trace_id: str
    ts: datetime
    value: Any
    label: str | None
    comment: str | None
    done: bool


class Extraction:
    """One run over the window ``plan_window(state, now)``: iterate it once for the records, then
    call ``next_state()``. ``mode``: how traces were fetched ("list", "get", "none"); ``api``: the
    generation that answered ("v3", "v4"). ``stats``: requests, retries, api_switches, scores
    (listed), records, up/down/unknown, and what was not handed out: duplicates (within the run),
    seen_before (by an earlier run), superseded (an older thumb on a trace), no_trace (session
    scores), missing_traces (trace not found: retried next run if still in its window);
    traces_listed / traces_fetched (by id)."""

    def __init__(self, settings: LangfuseSettings, state: ExtractState | None = None, *, now: datetime | None = None):
        self.settings = settings
        self.state = state or ExtractState()
        self.window = plan_window(self.state, now or datetime.now(UTC), settings)
        self.stats: Counter = Counter()
        self.mode: str | None = None
        self._http = LangfuseHttp(settings, self.stats)
        self._pool = ThreadPoolExecutor(settings.get_workers, thread_name_prefix="langfuse-get")
        first = settings.api_version if settings.api_version != "auto" else self.state.api_version or "v3"
        self._api: Generation = GENERATIONS[first](self._http, self._pool)
        self._started = self._done = False
        self._keep_from = self.window[1] - timedelta(minutes=settings.overlap_minutes)
        self._recent = {k: as_utc(t) for k, t in self.state.recent_ids.items() if as_utc(t) >= self._keep_from}
        self._seen: deque[set[str]] = deque(maxlen=_SEEN_PAGES)

    @property
    def api(self) -> str:
        return self._api.name

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> Extraction:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _trace_pages(self) -> Iterator[Page]:
        frm, to = self.window
        lookback = timedelta(minutes=self.settings.trace_lookback_minutes)
        return self._api.trace_pages(frm - lookback if frm else None, to + _SKEW)

    def _score_pages(self) -> tuple[Page, Iterator[Page]]:
        """The first score page and all of them. The first request is also the probe: on a dead
        route of this generation (``dead_codes``), ``api_version="auto"`` switches once."""
        pages = self._api.score_pages(*self.window)
        try:
            first = next(pages)
        except LangfuseError as err:
            if self.settings.api_version != "auto" or err.status_code not in self._api.dead_codes:
                raise
            dead = self._api.name
            self._api = GENERATIONS["v4" if dead == "v3" else "v3"](self._http, self._pool)
            self.stats["api_switches"] += 1
            log.warning(
                "Langfuse at %s: the %s read API answered HTTP %s; switching to the %s API for this "
                "run and the next ones",
                self.settings.host,
                dead,
                err.status_code,
                self._api.name,
            )
            pages = self._api.score_pages(*self.window)
            try:
                first = next(pages)
            except LangfuseError as err2:
                raise _neither(self.settings.host, {dead: err, self._api.name: err2}) from None
        return first, chain([first], pages)

    def _listing_pays(self, sfirst: Page, tfirst: Page) -> bool:
        """Listing every trace costs about pages x _LIST_PAGE_COST GETs, fetching by id one per
        scored trace. Totals where the server counts (v3); else the rates of the two first pages."""
        ps = self.settings.page_size
        if sfirst.total is not None and tfirst.total is not None:
            return math.ceil(tfirst.total / ps) * _LIST_PAGE_COST <= sfirst.total
        return _LIST_PAGE_COST * _rate(tfirst, self.window) <= ps * _rate(sfirst, self.window)

    # --- the run -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        if self._started:
            raise IrsflowError("an Extraction can be iterated once; start a new one")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[dict]:
        s, (frm, to) = self.settings, self.window
        sfirst, score_pages = self._score_pages()
        scores = self._feedback(score_pages)
        any_scores = bool(sfirst.rows) or sfirst.more  # a first page may be empty and not the last
        tfirst = trace_pages = None
        if any_scores and s.trace_fetch != "get":  # one trace page tells how many traces the list walk reads
            tfirst, trace_pages = _peek(self._trace_pages())
        if not any_scores:
            self.mode = "none"
        elif tfirst is None:
            self.mode = "get"
        else:
            self.mode = "list" if s.trace_fetch == "list" or self._listing_pays(sfirst, tfirst) else "get"
        log.info(
            "Langfuse extract (%s API) [%s, %s): %s feedback scores, %s traces in window -> %s",
            self.api,
            frm and _iso(frm),
            _iso(to),
            _count(sfirst),
            tfirst and _count(tfirst),
            self.mode,
        )
        if self.mode == "list":
            yield from self._merge(scores, (t for page in trace_pages for t in page.rows))
        else:
            yield from self._by_get(scores)
        self._done = True
        log.info("Langfuse extract done: %s", dict(self.stats))

    def _feedback(self, pages: Iterator[Page]) -> Iterator[_Fb]:
        """Scores as _Fb, newest first, minus within-run duplicates (offset paging shifts items to the
        next page when newer ones become visible mid-run; tie groups are read twice) and minus
        session-only scores."""
        for page in pages:
            ids: set[str] = set()
            for sc in page.rows:
                self.stats["scores"] += 1
                sid = sc["id"]
                if sid in ids or any(sid in seen for seen in self._seen):
                    self.stats["duplicates"] += 1
                    continue
                ids.add(sid)
                if not sc.get("traceId"):
                    self.stats["no_trace"] += 1
                    continue
                ts = _time(sc["timestamp"])
                string_value = sc.get("stringValue")
                value = string_value if sc.get("dataType") == "CATEGORICAL" else sc.get("value")
                prev = self.state.recent_ids.get(sid)
                done = prev is not None and as_utc(prev) == ts  # same id, new timestamp: an updated score
                if done:
                    self.stats["seen_before"] += 1
                yield _Fb(
                    sid,
                    sc["traceId"],
                    ts,
                    value,
                    label_of(self.settings, sc.get("value"), string_value),
                    sc.get("comment"),
                    done,
                )
            self._seen.append(ids)

    def _merge(self, scores: Iterator[_Fb], traces: Iterator[Any]) -> Iterator[dict]:
        """Walk scores and traces down in time together. A trace starts before its feedback, so when
        the trace walk is at time c, every score at or after c - skew has been read: a listed trace
        with no waiting score has none in this window. Waiting scores whose trace would be older
        than the lookback go to single GETs."""
        lookback = timedelta(minutes=self.settings.trace_lookback_minutes)
        waiting: dict[str, list[_Fb]] = {}  # trace id -> its scores, newest first; dict order = newest first
        expired: list[list[_Fb]] = []
        nxt = next(scores, None)
        for tr in traces:
            self.stats["traces_listed"] += 1
            c = _time(tr["timestamp"])
            while nxt is not None and nxt.ts >= c - _SKEW:
                self._wait(waiting, nxt)
                nxt = next(scores, None)
            while waiting:
                tid, group = next(iter(waiting.items()))
                if group[0].ts - lookback <= c:
                    break
                expired.append(waiting.pop(tid))
            if len(expired) >= self.settings.page_size:
                yield from self._fetch_groups(expired)
                expired = []
            group = waiting.pop(tr["id"], None)
            if group:
                yield from self._emit(group, tr)
            if nxt is None and not waiting:
                break  # every score is matched: older traces are of no interest
        expired.extend(waiting.values())
        yield from self._fetch_groups(expired)
        if nxt is not None:  # the trace walk ended first: the rest by id
            yield from self._by_get(_chain1(nxt, scores))

    def _wait(self, waiting: dict[str, list[_Fb]], fb: _Fb) -> None:
        if fb.done and not self.settings.latest_per_trace:
            return self._mark(fb)
        waiting.setdefault(fb.trace_id, []).append(fb)

    def _by_get(self, scores: Iterator[_Fb]) -> Iterator[dict]:
        groups: dict[str, list[_Fb]] = {}
        for fb in scores:
            self._wait(groups, fb)
            if len(groups) >= self.settings.page_size:
                yield from self._fetch_groups(list(groups.values()))
                groups = {}
        yield from self._fetch_groups(list(groups.values()))

    def _fetch_groups(self, groups: list[list[_Fb]]) -> Iterator[dict]:
        latest = self.settings.latest_per_trace
        todo = []
        for g in groups:
            if latest and g[0].done:  # handed out before and still the newest: nothing to fetch
                yield from self._emit(g, None)
            else:
                todo.append(g)
        n = self.settings.page_size
        for batch in (todo[i : i + n] for i in range(0, len(todo), n)):
            yield from self._fetched(
                batch, self._api.fetch_traces([g[0].trace_id for g in batch], min(g[0].ts for g in batch))
            )

    def _fetched(self, todo: list[list[_Fb]], traces: list[dict | None]) -> Iterator[dict]:
        for g, tr in zip(todo, traces):
            self.stats["traces_fetched"] += 1
            if tr is None:  # left out of next_state's ids: a later run whose window holds it retries
                self.stats["missing_traces"] += len(g)
                log.warning("Langfuse: trace %s of feedback %s not found", g[0].trace_id, g[0].id)
                continue
            yield from self._emit(g, tr, full=True)

    def _emit(self, group: list[_Fb], tr: Any, full: bool = False) -> Iterator[dict]:
        """Records for one trace's feedback (newest first). With ``latest_per_trace`` only the
        newest yields one, and only if the trace (``full``: fetched with its scores) holds no newer
        feedback: that newer one is, or will be, the one handed out."""
        latest = self.settings.latest_per_trace
        head = group[0]
        newer = (
            latest
            and full
            and any(
                sc.get("name") == self.settings.score_name and (_time(sc["timestamp"]), sc["id"]) > (head.ts, head.id)
                for sc in tr.get("scores") or []
            )
        )
        for fb in group:
            if fb.done:
                pass
            elif not latest or (fb is head and not newer):
                yield self._record(fb, tr)
            else:
                self.stats["superseded"] += 1
            self._mark(fb)

    def _mark(self, fb: _Fb) -> None:
        if fb.ts >= self._keep_from:
            self._recent[fb.id] = fb.ts

    def _record(self, fb: _Fb, tr: Any) -> dict:
        self.stats["records"] += 1
        self.stats[fb.label or "unknown"] += 1
        return {
            "trace_id": fb.trace_id,
            "score_id": fb.id,
            "label": fb.label,
            "score_value": fb.value,
            "score_timestamp": _iso(fb.ts),
            "comment": fb.comment,
            "trace": {
                "id": tr["id"],
                "timestamp": _iso(_time(tr["timestamp"])),
                "name": tr.get("name"),
                "input": tr.get("input"),
                "output": tr.get("output"),
                "metadata": tr.get("metadata"),
                "session_id": tr.get("sessionId"),
                "user_id": tr.get("userId"),
                "tags": list(tr.get("tags") or []),
            },
        }

    def next_state(self) -> ExtractState:
        """The state after this run: watermark = the window's end, recent ids pruned to the overlap.
        Call it after the records are safely written: saving it says they were."""
        if not self._done:
            raise IrsflowError("next_state() before the records were all read: the run is incomplete")
        to = self.window[1]
        return ExtractState(
            watermark=to, recent_ids={k: t for k, t in self._recent.items() if t < to}, api_version=self.api
        )


def _chain1(first: _Fb, rest: Iterator[_Fb]) -> Iterator[_Fb]:
    yield first
    yield from rest


def _peek(pages: Iterator[Page]) -> tuple[Page, Iterator[Page]]:
    first = next(pages)
    return first, chain([first], pages)


def _count(page: Page) -> str:
    return str(page.total) if page.total is not None else f"{len(page.rows)}{'+' if page.more else ''}"


def _rate(page: Page, window: tuple[datetime | None, datetime]) -> float:
    """Rows per second: over the window when the page is the whole listing, else over the span
    its rows cover (newest first: from the oldest row to the window's end)."""
    if not page.rows:
        return 0.0
    frm, to = window
    oldest = min(_time(r["timestamp"]) for r in page.rows)
    start = oldest if page.more or frm is None else min(frm, oldest)
    return len(page.rows) / max((to - start).total_seconds(), 1.0)
