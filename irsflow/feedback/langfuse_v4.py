"""The Langfuse v4 read API (Langfuse Cloud, self-hosted Langfuse v4), in the shapes the
extraction reads (see ``langfuse_api``).

    api = V4Api(LangfuseHttp(settings), pool)
    api.score_pages(frm, to)       # GET /api/public/v3/scores?fields=details,subject      (cursor)
    api.trace_pages(frm, to)       # GET /api/public/v2/observations?isRootObservation=true (cursor)
    api.fetch_traces(ids, since)   # the root observations of each trace (one GET per trace, in a
                                   # pool) + their newer scores (one GET per batch: traceId=a,b,...)

Formats from langfuse/langfuse (read at commit 6275144, 2026-08-22): ``fern/apis/server/definition/
scores-v3.yml``, ``observations.yml``, handlers ``web/src/pages/api/public/v3/scores/index.ts``,
``web/src/pages/api/public/v2/observations/index.ts``, ``packages/shared/src/server/repositories/
scores.ts`` (``listScoresV3ForPublicApi``), ``.../events.ts`` (``getObservationsV2FromEventsTable
ForPublicApi``), ``packages/shared/src/features/scores/interfaces/api/v3/endpoints.ts``.

What differs from the legacy API, and is handled here:
- Scores: no ``page``/``totalPages``: ``meta.cursor`` (base64url; absent on the last page) is sent
  back as ``cursor``. Order ``timestamp desc, id desc`` and the cursor is ``(timestamp, id)``, so
  ties are safe. The query schema is strict: an unknown parameter (``page``!) is HTTP 400. List
  filters are comma-separated (``environment=a,b``; a repeated key is a 400). Rows failing the
  server's own check are dropped after the cursor is set: a page may be short or empty and still
  have a cursor. The trace id is not a core field: ``fields=subject`` adds ``subject {kind: trace|
  observation|session|experiment, id, traceId?}``; ``comment`` needs ``details``. ``value`` is
  polymorphic (BOOLEAN: true/false, CATEGORICAL/TEXT: string); there is no ``stringValue``.
- Traces: there is no trace read route. A trace's input/output are those of its root observation
  (``isRootObservation=true``: no parent, or an SDK "app root" that keeps its parent; a trace
  ingested the legacy way has a synthetic root ``t-<trace id>``). Order ``startTime desc`` (then
  hashed trace id, id). ``fields`` groups: default ``core,basic`` only, ``io`` for input/output,
  ``metadata`` (values cut at 200 chars), ``trace_context`` for tags and the trace name; unknown
  groups are ignored. Input and output always arrive as JSON text (``parseIoAsJson=true`` is a
  400): parsed here as Langfuse's UI does (not JSON: the text itself).
- Server settings: a self-hosted server serves the observations route only with
  ``LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true`` (404 otherwise: ``LangfuseServerSetupError``),
  and v3.179.x the scores route only with ``LANGFUSE_ENABLE_SCORES_V3_API=true`` (``langfuse_api``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from irsflow.errors import IrsflowError
from irsflow.feedback.langfuse_api import (
    OBSERVATIONS_FLAG,
    RESTART,
    LangfuseError,
    LangfuseHttp,
    LangfuseServerSetupError,
    Page,
    wire_time,
)

SCORES, OBSERVATIONS = "api/public/v3/scores", "api/public/v2/observations"
_OBS_FIELDS = "core,basic,io,metadata,trace_context"
_OBS_LIMIT = 1000  # the observations route allows up to 1000 (scores: 100)


def json_text(value: Any) -> Any:
    """Observation input/output as sent: JSON text parsed, plain text (an SDK sends strings as
    they are) kept; text that parses to a bare number/bool/null stays text too."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, (dict, list, str)) else value


def score_row(sc: dict) -> dict:
    """A v3 score in the legacy shape (BOOLEAN as value 1/0 + stringValue "True"/"False")."""
    subject = sc.get("subject") or {}
    trace_id = {"trace": subject.get("id"), "observation": subject.get("traceId")}.get(subject.get("kind"))
    value = sc.get("value")
    if sc.get("dataType") == "BOOLEAN":
        value, string_value = float(bool(value)), "True" if value else "False"
    elif isinstance(value, str):
        value, string_value = None, value
    else:
        string_value = None
    return {
        "id": sc["id"],
        "traceId": trace_id,
        "name": sc.get("name"),
        "timestamp": sc["timestamp"],
        "value": value,
        "stringValue": string_value,
        "dataType": sc.get("dataType"),
        "comment": sc.get("comment"),
    }


def trace_row(obs: dict) -> dict:
    """A root observation as its trace."""
    return {
        "id": obs["traceId"],
        "timestamp": obs["startTime"],
        "name": obs.get("traceName") or obs.get("name"),
        "input": json_text(obs.get("input")),
        "output": json_text(obs.get("output")),
        "metadata": obs.get("metadata"),
        "sessionId": obs.get("sessionId"),
        "userId": obs.get("userId"),
        "tags": obs.get("tags") or [],
        "observationId": obs["id"],
        "observationType": obs.get("type"),
    }


def _has_io(obs: dict) -> bool:
    return obs.get("input") not in (None, "") or obs.get("output") not in (None, "")


def pick_root(trace_id: str, roots: list[dict]) -> dict | None:
    """The root whose input/output are the trace's: one with io first, the legacy trace's synthetic
    root, then a physical root over an app root, then the earliest."""
    mine = [o for o in roots if o.get("traceId") == trace_id]
    if not mine:
        return None
    return min(
        mine,
        key=lambda o: (
            not _has_io(o),
            o["id"] != f"t-{trace_id}",
            o.get("parentObservationId") is not None,
            o["startTime"],
        ),
    )


class V4Api:
    name = "v4"
    dead_codes = (404,)  # a Langfuse v3 server has neither route

    def __init__(self, http: LangfuseHttp, pool: ThreadPoolExecutor):
        self.http, self.settings, self.pool = http, http.settings, pool

    def _walk(self, what: str, path: str, params: dict) -> Iterator[dict]:
        """Responses of a cursor walk; a short or empty page with a cursor is not the end."""
        cursor, seen = None, set()
        while True:
            try:
                resp = self.http.get(what, path, {**params, "cursor": cursor})
            except LangfuseError as err:
                if path == OBSERVATIONS and err.status_code == 404:  # a filter never 404s: the route is off
                    raise LangfuseServerSetupError(
                        f"Langfuse at {self.settings.host} answered HTTP 404 on GET /api/public/v2/observations, "
                        f"the only route a Langfuse v4 server reads conversations from: set {OBSERVATIONS_FLAG} "
                        f"{RESTART} (the default from Langfuse v4.0 on). {err}",
                        404,
                    ) from None
                raise
            yield resp
            cursor = (resp.get("meta") or {}).get("cursor")
            if not cursor:
                return
            if cursor in seen:
                raise LangfuseError(f"Langfuse {what}: the server sent the same cursor twice")
            seen.add(cursor)

    def _scores(self, params: dict) -> Iterator[Page]:
        s = self.settings
        base = {
            "limit": s.page_size,
            "fields": "details,subject",
            "name": s.score_name,
            "environment": ",".join(s.environment) if s.environment else None,
        }
        for resp in self._walk("list scores", SCORES, {**base, **params}):
            yield Page([score_row(sc) for sc in resp["data"]], bool(resp["meta"].get("cursor")))

    def score_pages(self, frm: datetime | None, to: datetime) -> Iterator[Page]:
        return self._scores(
            {"dataType": self.settings.score_data_type, "fromTimestamp": wire_time(frm), "toTimestamp": wire_time(to)}
        )

    def _roots(self, params: dict) -> Iterator[dict]:
        s = self.settings
        base = {
            "isRootObservation": "true",
            "fields": _OBS_FIELDS,
            "environment": list(s.environment) if s.environment else None,
        }
        return self._walk("list observations", OBSERVATIONS, {**base, **params})

    def trace_pages(self, frm: datetime | None, to: datetime) -> Iterator[Page]:
        """Root observations started in ``[frm, to)`` as traces, newest first. Roots without
        input and output (e.g. a web framework's request span) do not stand for their trace."""
        for resp in self._roots(
            {"limit": self.settings.page_size, "fromStartTime": wire_time(frm), "toStartTime": wire_time(to)}
        ):
            yield Page(
                [trace_row(o) for o in resp["data"] if o.get("traceId") and _has_io(o)],
                bool(resp["meta"].get("cursor")),
            )

    def _trace(self, trace_id: str) -> dict | None:
        roots = [o for resp in self._roots({"traceId": trace_id, "limit": _OBS_LIMIT}) for o in resp["data"]]
        root = pick_root(trace_id, roots)
        return None if root is None else trace_row(root)

    def fetch_traces(self, trace_ids: list[str], since: datetime) -> list[dict | None]:
        """Traces by id, each with ``scores``: its feedback scores from ``since`` on."""
        if len(trace_ids) > 100:
            raise IrsflowError("fetch_traces: at most 100 trace ids per call (they travel in one URL)")
        traces = list(self.pool.map(self._trace, trace_ids))
        scores: dict[str, list[dict]] = {}
        if any(traces):
            found = sorted({t["id"] for t in traces if t})
            for page in self._scores({"traceId": ",".join(found), "fromTimestamp": wire_time(since)}):
                for sc in page.rows:
                    scores.setdefault(sc["traceId"], []).append(sc)
        return [None if t is None else {**t, "scores": scores.get(t["id"], [])} for t in traces]
