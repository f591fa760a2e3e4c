"""The legacy Langfuse read API (self-hosted Langfuse v3; deprecated by Langfuse v4).

    api = LegacyApi(LangfuseHttp(settings), pool)
    api.score_pages(frm, to)       # api.scores.get_many   GET /api/public/v2/scores   (page-numbered)
    api.trace_pages(frm, to)       # api.trace.list        GET /api/public/traces      (page-numbered)
    api.fetch_traces(ids, since)   # api.trace.get         GET /api/public/traces/{id} (one GET per trace)

Routes, parameters and shapes as langfuse 4.x's generated client sends and reads them (the server
side: ``web/src/pages/api/public/v2/scores/index.ts`` and ``.../traces/`` in langfuse/langfuse).
Rows come back in the shape the extraction reads (see ``langfuse_api``), which is this API's own.

Offset paging quirks handled here:
- a page can be short, even empty, before the last one (the server drops rows that fail its
  schema check after paging): walk to ``meta.totalPages``, re-read on every page, never stop early.
- scores are ordered by ``timestamp desc, event_ts desc`` only: scores sharing one timestamp can
  come in a different order on the next page's query, so one can fall between two pages. Where a
  page boundary splits such a tie (or lands next to a short page), the whole tie group is read on
  its own (``[t, t + 1 ms)``); the extraction drops the repeats by id.

On Langfuse v4 these routes answer 410 ``LEGACY_API_UNAVAILABLE_FOR_NEW_ORGANIZATION`` (Cloud
organisations created after the cutoff, ``legacyApiOrganizationCutoff.ts``) or 404 (self-hosted v4
in ``events_only`` mode, ``createAuthedProjectAPIRoute.ts``): ``dead_codes``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from urllib.parse import quote

from irsflow.feedback.langfuse_api import LangfuseHttp, Page, parse_time, wire_time

_TICK = timedelta(milliseconds=1)  # Langfuse keeps score timestamps to the millisecond


class LegacyApi:
    name = "v3"
    dead_codes = (404, 410)

    def __init__(self, http: LangfuseHttp, pool: ThreadPoolExecutor):
        self.http, self.settings, self.pool = http, http.settings, pool

    def _envs(self) -> list[str] | None:
        return list(self.settings.environment) if self.settings.environment else None  # the SDK repeats the key

    def _score_page(self, page: int, frm: datetime | None, to: datetime) -> dict:
        s = self.settings
        return self.http.get(
            "list scores",
            "api/public/v2/scores",
            {
                "page": page,
                "limit": s.page_size,
                "name": s.score_name,
                "dataType": s.score_data_type,
                "fromTimestamp": wire_time(frm),
                "toTimestamp": wire_time(to),
                "environment": self._envs(),
            },
        )

    def score_pages(self, frm: datetime | None, to: datetime) -> Iterator[Page]:
        """Feedback scores in ``[frm, to)``, newest first; tie groups split by a page boundary are
        read again whole (repeats possible, gaps not)."""
        last: str | None = None  # timestamp of the last row read
        for page in _walk(lambda p: self._score_page(p, frm, to)):
            short = page.more and len(page.rows) < self.settings.page_size
            if last is not None and (short or (page.rows and page.rows[0]["timestamp"] == last)):
                t = parse_time(last)
                yield from _walk(lambda p, t=t: self._score_page(p, t, t + _TICK))
            yield page
            if page.rows:
                last = page.rows[-1]["timestamp"]

    def trace_pages(self, frm: datetime | None, to: datetime) -> Iterator[Page]:
        """Traces started in ``[frm, to)``, newest first; "core,io": no observation ids, scores or metrics."""
        s = self.settings
        return _walk(
            lambda p: self.http.get(
                "list traces",
                "api/public/traces",
                {
                    "page": p,
                    "limit": s.page_size,
                    "fromTimestamp": wire_time(frm),
                    "toTimestamp": wire_time(to),
                    "orderBy": "timestamp.desc",
                    "environment": self._envs(),
                    "fields": "core,io",
                },
            )
        )

    def _get_trace(self, trace_id: str) -> dict | None:
        """ "core,io,scores": no observations (each repeats its prompt), and the trace's scores,
        which tell whether a newer feedback exists. None when not found."""
        return self.http.get(
            "get trace", f"api/public/traces/{quote(trace_id, safe='')}", {"fields": "core,io,scores"}, missing_ok=True
        )

    def fetch_traces(self, trace_ids: list[str], since: datetime) -> list[dict | None]:
        return list(self.pool.map(self._get_trace, trace_ids))


def _walk(fetch: Callable[[int], dict]) -> Iterator[Page]:
    """Pages 1..totalPages; totalPages is re-read on every page (late-visible items add pages)."""
    page = 1
    while True:
        resp = fetch(page)
        pages = resp["meta"]["totalPages"]
        yield Page(resp["data"], page < pages, resp["meta"]["totalItems"])
        if page >= pages:
            return
        page += 1
