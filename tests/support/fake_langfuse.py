"""A Langfuse-compatible public read API on 127.0.0.1, for tests and benchmarks (no Langfuse needed),
speaking both generations of it.

    with FakeLangfuse() as lf:                       # lf.url, lf.public_key, lf.secret_key
        lf.add_synthetic(500, feedback=0.5)          # chat traces, half of them with a thumb
        tid = lf.add_trace(ts, input=[...], output="...");  lf.add_score(tid, 1, ts)
        lf.fail_next(SCORES, 429, retry_after="2")
        lf.lag_s = 60                                # items ingested in the last 60 s are invisible
        lf.counts[TRACE]                             # requests per route; lf.log: (time, path, status, query)
    FakeLangfuse(legacy="gone", cloud=True)          # a Cloud organisation created after the cutoff
    FakeLangfuse(legacy="events_only")               # self-hosted Langfuse v4 in events_only mode
    FakeLangfuse(v4=False)                           # self-hosted Langfuse v3: no v4 routes
    FakeLangfuse(legacy="events_only", scores_v3_api=False, preview_opt_in=False)
                                                     # self-hosted v3.179.x in events_only mode, its
                                                     # v4 routes' flags unset: every read route 404s

    python tests/support/fake_langfuse.py --traces 10000     # serve in the foreground (benchmarks); prints
                                                     # "<url> <public key> <secret key>" on one line

Legacy API (what langfuse 4.x's generated client calls, server side ``web/src/pages/api/public/
v2/scores/index.ts``, ``traces/index.ts``, ``traces/[traceId].ts``): ``GET /api/public/v2/scores``
(newest first by timestamp only: ties come in any order with ``unstable_ties``, ``fromTimestamp``
inclusive, ``toTimestamp`` exclusive, name/dataType/environment/traceId/scoreIds, limit <= 100,
only scores whose trace is visible), ``GET /api/public/traces`` (fromTimestamp/toTimestamp,
orderBy timestamp.asc|desc, fields) and ``GET /api/public/traces/{id}`` (full scores, no
observations); ``data`` + ``meta {page, limit, totalItems, totalPages}``, BOOLEAN scores as value
1/0 with stringValue "True"/"False". ``legacy="gone"``: 410 with the body of
``legacyApiOrganizationCutoff.ts`` (after auth, as there); ``legacy="events_only"``: 404 before
auth (``createAuthedProjectAPIRoute.ts`` ``rejectInEventsOnlyMode``). ``cloud``: 200s carry
``_deprecation`` (``deprecations.ts``).

v4 API, from langfuse/langfuse at commit 6275144 (2026-08-22): ``fern/apis/server/definition/
scores-v3.yml``, ``observations.yml``; ``web/src/pages/api/public/v3/scores/index.ts``,
``.../v2/observations/index.ts``; ``packages/shared/src/features/scores/interfaces/api/v3/
endpoints.ts`` (strict query: unknown keys are 400), ``packages/shared/src/server/repositories/
scores.ts`` (``listScoresV3ForPublicApi``: order ``timestamp desc, id desc``, base64url cursor
``{v: 1, lastTimestamp, lastId}``, limit+1 rows read, rows failing conversion dropped after the
cursor is set: short and empty pages with a cursor), ``.../events.ts`` (observations: order
``start_time desc, xxHash32(trace_id) desc, span_id desc`` (CRC32 stands in for xxHash32), base64
cursor ``{lastStartTimeTo, lastTraceId, lastId}``, fields groups default ``core,basic``, unknown
groups dropped, input/output as the JSON text the SDK sent (``langfuse-python`` ``_serialize``:
strings as they are), metadata values cut at 200 chars), ``packages/shared/src/domain/
observation-field-groups.ts``, ``web/src/features/public-api/types/observations.ts``.
Scores with ``broken=True`` stand for rows the server drops after paging (both generations).
Server flags (checked after auth; the real handlers validate the query first): ``scores_v3_api=False``: ``/api/public/
v3/scores`` answers 404 ``{"message": "Not Found", "error": "LangfuseNotFoundError"}``
(``web/src/pages/api/public/v3/scores/index.ts`` in v3.179.0-v3.179.1 while
``LANGFUSE_ENABLE_SCORES_V3_API`` != "true"; ``LangfuseNotFoundError`` in ``packages/shared/src/
errors/NotFoundError.ts``, its body from ``withMiddlewares.ts``; the flag is gone from v3.180.0 on);
``preview_opt_in=False``: ``/api/public/v2/observations`` answers 404 ``NO_V4_404``
(``.../v2/observations/index.ts`` while ``LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN`` != "true").
Basic auth, else 401.
"""

from __future__ import annotations

import base64
import json
import math
import random
import sys
import threading
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    from tests.support.http_reply import send_json
except ImportError:  # run as a script (python tests/support/fake_*.py): its own folder is on sys.path
    from http_reply import send_json

SCORES, TRACES, TRACE = "/api/public/v2/scores", "/api/public/traces", "/api/public/traces/{id}"
SCORES_V3, OBSERVATIONS = "/api/public/v3/scores", "/api/public/v2/observations"
LEGACY = (SCORES, TRACES, TRACE)

# deprecations.ts / rateLimitUpgradePaths.ts / legacyApiOrganizationCutoff.ts
SUNSET, SUNSET_HUMAN, CUTOFF_HUMAN = "2026-11-16", "November 16, 2026", "September 16, 2026"
_NOTICE = f"On Langfuse Cloud, Langfuse v3 is deprecated and this endpoint will be removed on {SUNSET_HUMAN}."
_OBS_REPLACEMENT = "GET /api/public/v2/observations?fromStartTime=<from>&toStartTime=<to>"
DEPRECATION = {
    SCORES: {
        "message": f"{_NOTICE} Use GET /api/public/v3/scores instead.",
        "replacement": "GET /api/public/v3/scores",
        "docsUrl": "https://langfuse.com/docs/api-and-data-platform/features/scores-api",
        "sunsetAt": SUNSET,
    },
    TRACES: {
        "message": f"{_NOTICE} In Langfuse v4, read span and trace data via {_OBS_REPLACEMENT}.",
        "replacement": _OBS_REPLACEMENT,
        "sunsetAt": SUNSET,
        "docsUrl": "https://langfuse.com/docs/api-and-data-platform/features/observations-api",
    },
}
DEPRECATION[TRACE] = DEPRECATION[TRACES]
EVENTS_ONLY_404 = (
    "This endpoint is not available on deployments running in Langfuse v4 events_only mode. "
    "Learn more about Langfuse v4 at: https://langfuse.com/docs/v4"
)
NO_V4_404 = (
    "The observations v2 API is only available in a Langfuse v4 write mode. Learn more at: https://langfuse.com/docs/v4"
)

# endpoints.ts GetScoresQueryV3 (strict) and the groups of scores-v3.yml
V3_PARAMS = {
    "limit",
    "cursor",
    "fields",
    "id",
    "name",
    "source",
    "dataType",
    "environment",
    "configId",
    "queueId",
    "authorUserId",
    "value",
    "valueMin",
    "valueMax",
    "traceId",
    "sessionId",
    "observationId",
    "experimentId",
    "fromTimestamp",
    "toTimestamp",
    "userId",
    "traceTags",
}
V3_GROUPS = ("core", "details", "subject", "annotation")
DATA_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT", "CORRECTION")
OBS_GROUPS = {  # observation-field-groups.ts
    "core": ("id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type"),
    "basic": (
        "name",
        "level",
        "statusMessage",
        "version",
        "environment",
        "bookmarked",
        "public",
        "userId",
        "sessionId",
        "isRootObservation",
    ),
    "time": ("completionStartTime", "createdAt", "updatedAt"),
    "io": ("input", "output"),
    "metadata": ("metadata",),
    "model": ("providedModelName", "internalModelId", "modelParameters"),
    "usage": ("usageDetails", "costDetails", "totalCost", "usagePricingTierName"),
    "prompt": ("promptId", "promptName", "promptVersion"),
    "metrics": ("latency", "timeToFirstToken"),
    "trace_context": ("tags", "release", "traceName"),
}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _ms(t: float) -> int:
    return round(t * 1000)


def sdk_text(value) -> str | None:
    """How the Langfuse SDK sends input/output (``_client/attributes.py`` ``_serialize``)."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


class BadRequest(Exception):
    """A 400 with Langfuse's body for invalid query data."""


class FakeLangfuse:
    def __init__(
        self,
        public_key: str = "pk-lf-fake",
        secret_key: str = "sk-lf-fake-secret",
        *,
        legacy: str = "ok",
        v4: bool = True,
        cloud: bool = False,
        unstable_ties: bool = False,
        scores_v3_api: bool = True,
        preview_opt_in: bool = True,
    ):
        if legacy not in ("ok", "gone", "events_only"):
            raise ValueError(f"legacy: ok|gone|events_only, got {legacy!r}")
        self.public_key, self.secret_key = public_key, secret_key
        self.legacy, self.v4, self.cloud, self.unstable_ties = legacy, v4, cloud, unstable_ties
        self.scores_v3_api, self.preview_opt_in = scores_v3_api, preview_opt_in
        self.lag_s = 0.0
        self.traces: dict[str, dict] = {}  # id -> {"ts", "ingested", "json"}  (legacy trace)
        self.observations: dict[str, dict] = {}  # id -> {"ts", "ingested", "json"}  (ObservationV2, all groups)
        self.scores: dict[str, dict] = {}  # id -> {"ts", "ingested", "json", "broken"}  (legacy score)
        self.trace_scores: dict[str, list[str]] = {}
        self.counts: Counter = Counter()
        self.log: list[tuple[float, str, int, str]] = []  # (arrival time, path, status, query string)
        self.hooks: list = []  # fn(path, params, status): runs after a response is
        # computed, before it is sent (data changes mid-read)
        self._fail: dict[str, list[tuple[int, str | None]]] = {}
        self._lock = threading.Lock()
        self._sorted: dict[str, list[dict]] = {}
        self._cache: dict[tuple, list[dict]] = {}  # query minus page -> rows, while nothing is hidden by lag
        self._version = 0
        self._newest_ingest = 0.0
        self._n = 0
        self._requests = 0
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, port: int = 0) -> FakeLangfuse:
        fake = self

        class Handler(_Handler):
            lf = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True, name="fake-langfuse").start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeLangfuse:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def settings(self, **kw):
        """The extraction's LangfuseSettings for this server and its keys, retrying without waiting."""
        from irsflow.feedback.langfuse import LangfuseSettings  # here: the script mode needs no irsflow

        return LangfuseSettings(
            host=self.url, public_key=self.public_key, secret_key=self.secret_key, backoff_s=0.01, **kw
        )

    # --- data ------------------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:08d}{random.Random(self._n).getrandbits(64):016x}"

    def add_trace(
        self,
        timestamp: datetime,
        input=None,
        output=None,
        *,
        id: str | None = None,
        name: str = "chat",
        user_id: str | None = "user-1",
        session_id: str | None = None,
        tags=(),
        metadata=None,
        environment: str = "default",
        ingested_at: float | None = None,
        obs_type: str = "SPAN",
        root: str = "otel",
    ) -> str:
        """A trace and its root observation (type ``obs_type``: GENERATION for the OpenAI
        integration, SPAN for ``@observe``, CHAIN for a LangChain graph). ``root``: "otel" (a span
        of the SDK), "legacy" (the synthetic ``t-<id>`` root of a trace ingested the legacy way),
        "app" (the SDK's span is an app root under a web framework's request span without io)."""
        id = id or self._id("t")
        ingested = time.time() if ingested_at is None else ingested_at
        body = {
            "id": id,
            "timestamp": iso(timestamp),
            "name": name,
            "input": input,
            "output": output,
            "sessionId": session_id,
            "release": None,
            "version": None,
            "userId": user_id,
            "metadata": metadata or {},
            "tags": list(tags),
            "public": False,
            "environment": environment,
            "htmlPath": f"/project/fake/traces/{id}",
            "latency": 1.5,
            "totalCost": 0.0001,
        }
        ctx = {
            "userId": user_id,
            "sessionId": session_id,
            "environment": environment,
            "tags": list(tags),
            "traceName": name,
            "metadata": {k: str(v) for k, v in (metadata or {}).items()},
        }
        parent = None
        if root == "app":
            parent = self.add_observation(
                id, timestamp - timedelta(milliseconds=5), type="SPAN", name="POST /chat", ingested_at=ingested, **ctx
            )
        self.add_observation(
            id,
            timestamp,
            type=obs_type,
            name=name,
            input=input,
            output=output,
            parent=parent,
            obs_id=f"t-{id}" if root == "legacy" else None,
            app_root=root == "app",
            ingested_at=ingested,
            **ctx,
        )
        with self._lock:
            self.traces[id] = {"ts": timestamp.timestamp(), "ingested": ingested, "json": body}
            self._changed(ingested, "traces")
        return id

    def add_observation(
        self,
        trace_id: str,
        start: datetime,
        *,
        type: str = "SPAN",
        name: str | None = None,
        input=None,
        output=None,
        parent: str | None = None,
        obs_id: str | None = None,
        app_root: bool = False,
        ingested_at: float | None = None,
        userId=None,
        sessionId=None,
        environment="default",
        tags=(),
        traceName=None,
        metadata=None,
    ) -> str:
        """One observation (v4 routes only): a child of ``parent``, or a root without one."""
        oid = obs_id or f"{random.Random(f'{trace_id}{self._n}').getrandbits(64):016x}"
        self._n += 1
        o = {
            "id": oid,
            "traceId": trace_id,
            "startTime": iso(start),
            "endTime": iso(start + timedelta(seconds=1.5)),
            "projectId": "fake-project",
            "parentObservationId": parent,
            "type": type,
            "name": name,
            "level": "DEFAULT",
            "statusMessage": None,
            "version": None,
            "environment": environment,
            "bookmarked": False,
            "public": False,
            "userId": userId,
            "sessionId": sessionId,
            "isRootObservation": parent is None or app_root,
            "completionStartTime": None,
            "createdAt": iso(start),
            "updatedAt": iso(start),
            "input": sdk_text(input),
            "output": sdk_text(output),
            "metadata": metadata or {},
            "providedModelName": "gpt-4o-mini" if type == "GENERATION" else None,
            "internalModelId": None,
            "modelParameters": {},
            "usageDetails": {},
            "costDetails": {},
            "totalCost": 0.0,
            "usagePricingTierName": None,
            "promptId": None,
            "promptName": None,
            "promptVersion": None,
            "latency": 1.5,
            "timeToFirstToken": None,
            "tags": list(tags),
            "release": None,
            "traceName": traceName,
        }
        with self._lock:
            self.observations[oid] = {
                "ts": start.timestamp(),
                "ingested": time.time() if ingested_at is None else ingested_at,
                "json": o,
            }
        return oid

    def add_score(
        self,
        trace_id: str | None,
        value,
        timestamp: datetime,
        *,
        name: str = "user-feedback",
        data_type: str = "BOOLEAN",
        comment: str | None = None,
        id: str | None = None,
        environment: str = "default",
        ingested_at: float | None = None,
        observation_id: str | None = None,
        session_id: str | None = None,
        broken: bool = False,
    ) -> str:
        """``value``: 1/0 (or True/False) for BOOLEAN, a string for CATEGORICAL, a number for NUMERIC.
        ``broken``: a row the server drops from its answer after paging (fails its own checks)."""
        id = id or self._id("s")
        body = {
            "id": id,
            "traceId": trace_id,
            "sessionId": session_id,
            "observationId": observation_id,
            "datasetRunId": None,
            "name": name,
            "source": "API",
            "timestamp": iso(timestamp),
            "createdAt": iso(timestamp),
            "updatedAt": iso(timestamp),
            "authorUserId": None,
            "comment": comment,
            "metadata": {},
            "configId": None,
            "queueId": None,
            "environment": environment,
            "dataType": data_type,
        }
        if data_type == "BOOLEAN":
            body.update(value=float(value), stringValue="True" if float(value) == 1 else "False")
        elif data_type == "CATEGORICAL":
            body.update(value=0.0, stringValue=str(value))
        else:
            body.update(value=float(value))
        with self._lock:
            old = self.scores.get(id)
            if old is None and trace_id:
                self.trace_scores.setdefault(trace_id, []).append(id)
            self.scores[id] = {
                "ts": timestamp.timestamp(),
                "ingested": time.time() if ingested_at is None else ingested_at,
                "json": body,
                "broken": broken,
            }
            self._changed(self.scores[id]["ingested"], "scores")
        return id

    def add_synthetic(
        self,
        n: int,
        *,
        start: datetime | None = None,
        every_s: float = 30.0,
        feedback: float = 1.0,
        up: float = 0.7,
        seed: int = 0,
        name: str = "user-feedback",
    ) -> list[str]:
        """``n`` chat traces ``every_s`` apart (ending about now); a share ``feedback`` of them get a
        thumb (up with probability ``up``) 5-300 s after the trace. Returns the trace ids."""
        rng = random.Random(seed)
        start = start or datetime.now(UTC) - timedelta(seconds=n * every_s + 600)
        ids = []
        for i in range(n):
            ts = start + timedelta(seconds=i * every_s)
            messages, answer = chat(rng, i)
            tid = self.add_trace(
                ts,
                messages if rng.random() < 0.8 else {"messages": messages},
                answer,
                user_id=f"user-{rng.randrange(50)}",
                session_id=f"sess-{i // 3}",
                tags=["prod"],
                metadata={"model": "smol", "turns": len(messages)},
                obs_type="GENERATION",
            )
            if rng.random() < feedback:
                self.add_score(
                    tid,
                    int(rng.random() < up),
                    ts + timedelta(seconds=rng.uniform(5, 300)),
                    name=name,
                    comment=rng.choice([None, None, "thanks", "wrong answer"]),
                )
            ids.append(tid)
        return ids

    def fail_next(self, path: str, status: int = 429, retry_after: str | None = None, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` (a route constant above) answer ``status``."""
        self._fail.setdefault(path, []).extend([(status, retry_after)] * times)

    # --- legacy queries --------------------------------------------------------------------------
    def _changed(self, ingested: float, kind: str) -> None:
        self._sorted.pop(kind, None)
        self._cache.clear()
        self._version += 1
        self._newest_ingest = max(self._newest_ingest, ingested)

    def rows(self, path: str, q: dict) -> list[dict]:
        """All rows matching ``q`` (page aside). Cached while every item is visible, so that reading
        10,000 items page by page does not re-filter them all on every page."""
        if path == SCORES and self.unstable_ties:
            return self.query_scores(q)
        key = (path, self.lag_s, tuple(sorted((k, tuple(v)) for k, v in q.items() if k != "page")))
        with self._lock:
            version, cacheable = self._version, self._newest_ingest <= time.time() - self.lag_s
            if cacheable and key in self._cache:
                return self._cache[key]
        rows = self.query_scores(q) if path == SCORES else self.query_traces(q)
        with self._lock:
            if cacheable and version == self._version:
                self._cache[key] = rows
        return rows

    def _visible(self, kind: str) -> list[dict]:
        with self._lock:
            if kind not in self._sorted:  # newest first; id breaks ties so pages are stable
                items = list((self.scores if kind == "scores" else self.traces).values())
                self._sorted[kind] = sorted(items, key=lambda r: (r["ts"], r["json"]["id"]), reverse=True)
            items = self._sorted[kind]
        cutoff = time.time() - self.lag_s
        return [r for r in items if r["ingested"] <= cutoff]

    def query_scores(self, q: dict) -> list[dict]:
        visible_traces = {r["json"]["id"] for r in self._visible("traces")}
        rows = [r for r in self._visible("scores") if r["json"]["traceId"] in visible_traces]  # Langfuse JOINs traces
        if self.unstable_ties:  # ORDER BY timestamp desc only: ties come in any order, query by query
            rng = random.Random(self._requests)
            rows = sorted(rows, key=lambda r: (r["ts"], rng.random()), reverse=True)
        rows = _window(rows, q)
        for key, field in (("name", "name"), ("dataType", "dataType"), ("traceId", "traceId")):
            if key in q:
                rows = [r for r in rows if r["json"][field] == q[key][0]]
        if "environment" in q:
            rows = [r for r in rows if r["json"]["environment"] in _many(q["environment"])]
        if "scoreIds" in q:
            wanted = set(_many(q["scoreIds"]))
            rows = [r for r in rows if r["json"]["id"] in wanted]
        return [r for r in rows]

    def query_traces(self, q: dict) -> list[dict]:
        rows = _window(self._visible("traces"), q)
        if "environment" in q:
            rows = [r for r in rows if r["json"]["environment"] in _many(q["environment"])]
        for key, field in (("name", "name"), ("userId", "userId"), ("sessionId", "sessionId")):
            if key in q:
                rows = [r for r in rows if r["json"][field] == q[key][0]]
        if q.get("orderBy", ["timestamp.desc"])[0] == "timestamp.asc":
            rows = rows[::-1]
        return [r["json"] for r in rows]

    def trace_json(self, body: dict, fields: set[str] | None, full: bool) -> dict:
        out = dict(body)
        if fields is not None and "io" not in fields:
            out.update(input=None, output=None, metadata=None)
        if fields is not None and "metrics" not in fields:
            out.update(latency=-1, totalCost=-1)
        cutoff = time.time() - self.lag_s
        sids = [s for s in self.trace_scores.get(body["id"], []) if self.scores[s]["ingested"] <= cutoff]
        if fields is not None and "scores" not in fields:
            sids = []
        out["observations"] = []
        out["scores"] = [self.scores[s]["json"] for s in sids] if full else sids
        return out

    def legacy_list(self, path: str, q: dict, fields: set[str] | None) -> dict:
        page, limit = int(q.get("page", ["1"])[0]), int(q.get("limit", ["50"])[0])
        if limit > 100 or limit < 1 or page < 1:
            raise BadRequest("limit must be 1..100, page >= 1")
        rows = self.rows(path, q)
        data = rows[(page - 1) * limit : page * limit]
        if path == SCORES:  # filterAndValidateV2GetScoreList runs after paging: totals still count them
            data = [r["json"] for r in data if not r["broken"]]
        else:
            data = [self.trace_json(t, fields, full=False) for t in data]
        return {
            "data": data,
            "meta": {"page": page, "limit": limit, "totalItems": len(rows), "totalPages": math.ceil(len(rows) / limit)},
        }

    # --- v4 queries ------------------------------------------------------------------------------
    def v3_scores(self, q: dict) -> dict:
        """GET /api/public/v3/scores (listScoresV3ForPublicApi)."""
        one = _single(q)
        unknown = set(one) - V3_PARAMS
        if unknown:
            raise BadRequest(
                [
                    {
                        "code": "unrecognized_keys",
                        "keys": sorted(unknown),
                        "path": [],
                        "message": f"Unrecognized key(s) in object: {', '.join(map(repr, sorted(unknown)))}",
                    }
                ]
            )
        for key in ("userId", "traceTags"):
            if one.get(key):
                raise BadRequest(
                    f"{key} filter requires a trace JOIN and is not supported in v3 — use v2 or omit this filter"
                )
        limit = _int(one.get("limit") or "50", "limit", 1, 100)
        fields = _csv(one.get("fields")) or ["core"]
        if set(fields) - set(V3_GROUPS):
            raise BadRequest(f"fields: invalid option(s) {sorted(set(fields) - set(V3_GROUPS))}")
        data_types = [v.upper() for v in _csv(one.get("dataType"))]
        if set(data_types) - set(DATA_TYPES):
            raise BadRequest(f"Invalid dataType value. Allowed: {', '.join(DATA_TYPES)}")
        if sum(bool(_csv(one.get(k))) for k in ("traceId", "sessionId", "experimentId")) > 1:
            raise BadRequest("At most one of traceId, sessionId, experimentId may be specified")
        rows = [r for r in self.scores.values() if r["ingested"] <= time.time() - self.lag_s]  # no trace JOIN
        filters = {
            "id": "id",
            "name": "name",
            "environment": "environment",
            "traceId": "traceId",
            "sessionId": "sessionId",
            "observationId": "observationId",
            "source": "source",
        }
        for key, field in filters.items():
            wanted = _csv(one.get(key))
            if wanted:
                rows = [r for r in rows if str(r["json"][field]) in wanted]
        if data_types:
            rows = [r for r in rows if r["json"]["dataType"] in data_types]
        if one.get("fromTimestamp"):
            rows = [r for r in rows if _ms(r["ts"]) >= _ms(_parse_time(one["fromTimestamp"]))]
        if one.get("toTimestamp"):
            rows = [r for r in rows if _ms(r["ts"]) < _ms(_parse_time(one["toTimestamp"]))]
        key = lambda r: (_ms(r["ts"]), r["json"]["id"])  # noqa: E731
        if one.get("cursor"):
            c = _decode(one["cursor"], "base64url")
            if c.get("v") != 1 or not isinstance(c.get("lastId"), str):
                raise BadRequest("Invalid cursor format")
            last = (_ms(_parse_time(c["lastTimestamp"])), c["lastId"])
            rows = [r for r in rows if key(r) < last]
        rows = sorted(rows, key=key, reverse=True)[: limit + 1]
        page = rows[:limit]
        meta = {"limit": limit}
        if len(rows) > limit and page:
            last = page[-1]
            meta["cursor"] = _encode(
                {"v": 1, "lastTimestamp": iso(datetime.fromtimestamp(last["ts"], UTC)), "lastId": last["json"]["id"]},
                "base64url",
            )
        return {"data": [_score_v3(r["json"], fields) for r in page if not r["broken"]], "meta": meta}

    def v2_observations(self, q: dict) -> dict:
        """GET /api/public/v2/observations (getObservationsV2FromEventsTableForPublicApi)."""
        one = {k: v[-1] for k, v in q.items()}
        if one.get("parseIoAsJson") == "true":
            raise BadRequest(
                "parseIoAsJson=true is no longer supported on the v2 observations endpoint. "
                "Input/output fields are always returned as raw strings. Remove the parseIoAsJson "
                "parameter or set it to false."
            )
        if "filter" in one:
            raise BadRequest("this fake does not implement the `filter` parameter")
        limit = _int(one.get("limit") or "50", "limit", 0, 1000)
        groups = [g for g in _csv(one.get("fields")) if g in OBS_GROUPS] or ["core", "basic"]
        rows = [r for r in self.observations.values() if r["ingested"] <= time.time() - self.lag_s]
        for key in ("traceId", "type", "name", "userId", "sessionId", "level", "version"):
            if one.get(key):
                rows = [r for r in rows if r["json"][key] == one[key]]
        if "parentObservationId" in one:
            rows = [r for r in rows if (r["json"]["parentObservationId"] or "") == one["parentObservationId"]]
        if "isRootObservation" in one:
            if one["isRootObservation"] not in ("true", "false"):
                raise BadRequest("isRootObservation: expected true or false")
            rows = [r for r in rows if r["json"]["isRootObservation"] == (one["isRootObservation"] == "true")]
        if "environment" in q:
            rows = [r for r in rows if r["json"]["environment"] in q["environment"]]
        if one.get("fromStartTime"):
            rows = [r for r in rows if _ms(r["ts"]) >= _ms(_parse_time(one["fromStartTime"]))]
        if one.get("toStartTime"):
            rows = [r for r in rows if _ms(r["ts"]) < _ms(_parse_time(one["toStartTime"]))]
        key = lambda r: (_ms(r["ts"]), _hash(r["json"]["traceId"]), r["json"]["id"])  # noqa: E731
        if one.get("cursor"):
            c = _decode(one["cursor"], "base64")
            last = (_ms(_parse_time(c["lastStartTimeTo"])), _hash(c["lastTraceId"]), c["lastId"])
            rows = [r for r in rows if key(r) < last]
        rows = sorted(rows, key=key, reverse=True)[: limit + 1]
        page = rows[:limit]
        meta = {}
        if len(rows) > limit and page:
            meta["cursor"] = _encode(
                {
                    "lastStartTimeTo": page[-1]["json"]["startTime"],
                    "lastTraceId": page[-1]["json"]["traceId"],
                    "lastId": page[-1]["json"]["id"],
                },
                "base64",
            )
        expand = set(_csv(one.get("expandMetadata")))
        return {"data": [_observation_v2(r["json"], groups, expand) for r in page], "meta": meta}


def _score_v3(s: dict, fields: list[str]) -> dict:
    """scoreDomainToV3: polymorphic value, groups on request."""
    dt = s["dataType"]
    value = s["value"] == 1 if dt == "BOOLEAN" else s["stringValue"] if dt in ("CATEGORICAL", "TEXT") else s["value"]
    out = {
        "id": s["id"],
        "projectId": "fake-project",
        "name": s["name"],
        "dataType": dt,
        "value": value,
        "source": s["source"],
        "timestamp": s["timestamp"],
        "environment": s["environment"],
        "createdAt": s["createdAt"],
        "updatedAt": s["updatedAt"],
    }
    if "details" in fields:
        out.update(comment=s["comment"], configId=s["configId"], metadata=s["metadata"])
    if "annotation" in fields:
        out.update(authorUserId=s["authorUserId"], queueId=s["queueId"])
    if "subject" in fields:
        if s["observationId"]:
            out["subject"] = {
                "kind": "observation",
                "id": s["observationId"],
                **({"traceId": s["traceId"]} if s["traceId"] else {}),
            }
        elif s["sessionId"]:
            out["subject"] = {"kind": "session", "id": s["sessionId"]}
        else:
            out["subject"] = {"kind": "trace", "id": s["traceId"]}
    return out


def _observation_v2(o: dict, groups: list[str], expand: set[str]) -> dict:
    out = {f: o[f] for g in ["core", *groups] for f in OBS_GROUPS[g]}
    if "metadata" in out:
        out["metadata"] = {k: v if k in expand or not isinstance(v, str) else v[:200] for k, v in o["metadata"].items()}
    out.update(modelId=None, inputPrice=None, outputPrice=None, totalPrice=None)  # enrichment: always present
    return out


def _hash(trace_id: str) -> int:
    return zlib.crc32(trace_id.encode())


def _encode(obj: dict, alphabet: str) -> str:
    raw = json.dumps(obj).encode()
    return (base64.urlsafe_b64encode(raw).rstrip(b"=") if alphabet == "base64url" else base64.b64encode(raw)).decode()


def _decode(cursor: str, alphabet: str) -> dict:
    try:
        pad = "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(cursor + pad) if alphabet == "base64url" else base64.b64decode(cursor + pad)
        return json.loads(raw)
    except ValueError:
        raise BadRequest("Invalid cursor format") from None


def _single(q: dict) -> dict:
    """Next.js gives a repeated key as an array, which z.string() refuses."""
    for k, v in q.items():
        if len(v) > 1:
            raise BadRequest(
                [
                    {
                        "code": "invalid_type",
                        "expected": "string",
                        "received": "array",
                        "path": [k],
                        "message": "Expected string, received array",
                    }
                ]
            )
    return {k: v[0] for k, v in q.items()}


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _int(value: str, name: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"{name}: expected a number") from None
    if not lo <= n <= hi:
        raise BadRequest(f"{name}: must be {lo}..{hi}")
    return n


def _many(values: list[str]) -> list[str]:
    return [v for value in values for v in value.split(",")]


def _window(rows: list[dict], q: dict) -> list[dict]:
    lo = _parse_time(q["fromTimestamp"][0]) if "fromTimestamp" in q else -math.inf
    hi = _parse_time(q["toTimestamp"][0]) if "toTimestamp" in q else math.inf
    return [r for r in rows if lo <= r["ts"] < hi]


class _Handler(BaseHTTPRequestHandler):
    lf: FakeLangfuse
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server behind a proxy
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:
        pass

    def _send(self, path: str, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        lf = self.lf
        for hook in list(lf.hooks):
            hook(path, parse_qs(urlsplit(self.path).query), status)
        with lf._lock:  # counted before the client can see the answer
            lf.counts[path] += 1
            lf.log.append((self._arrived, path, status, urlsplit(self.path).query))
        send_json(self, status, data, headers)

    def do_GET(self) -> None:
        self._arrived = time.time()
        lf = self.lf
        url = urlsplit(self.path)
        q = parse_qs(url.query, keep_blank_values=True)
        path = {SCORES: SCORES, TRACES: TRACES, SCORES_V3: SCORES_V3, OBSERVATIONS: OBSERVATIONS}.get(url.path)
        if path is None and url.path.startswith(TRACES + "/"):
            path = TRACE
        if path is None or (path in (SCORES_V3, OBSERVATIONS) and not lf.v4):
            return self._send(
                url.path if path is None else path,
                404,
                {"message": NO_V4_404, "error": "LangfuseNotFoundError"}
                if path == OBSERVATIONS
                else {"message": "Not Found"},
            )
        if path in LEGACY and lf.legacy == "events_only":  # rejected before auth
            return self._send(path, 404, {"message": EVENTS_ONLY_404})
        expected = "Basic " + base64.b64encode(f"{lf.public_key}:{lf.secret_key}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._send(path, 401, {"error": "Unauthorized", "message": "Invalid credentials"})
        with lf._lock:
            lf._requests += 1
            fail = lf._fail.get(path, []).pop(0) if lf._fail.get(path) else None
        if fail:
            status, retry_after = fail
            return self._send(
                path,
                status,
                {"message": f"injected {status}"},
                {"Retry-After": retry_after} if retry_after is not None else None,
            )
        if path in LEGACY and lf.legacy == "gone":
            dep = DEPRECATION[path]
            return self._send(
                path,
                410,
                {
                    "error": "LEGACY_API_UNAVAILABLE_FOR_NEW_ORGANIZATION",
                    "message": f"GET {url.path} is a legacy API that is not available to organizations created on or "
                    f"after {CUTOFF_HUMAN}. Migrate this request to {dep['replacement']}. See the migration "
                    f"documentation at {dep['docsUrl']}.",
                    "requestedEndpoint": f"GET {url.path}",
                    "replacementEndpoint": dep["replacement"],
                    "documentationUrl": dep["docsUrl"],
                    "_deprecation": dep,
                },
            )
        if (path == SCORES_V3 and not lf.scores_v3_api) or (path == OBSERVATIONS and not lf.preview_opt_in):
            return self._send(
                path,
                404,
                {"message": "Not Found" if path == SCORES_V3 else NO_V4_404, "error": "LangfuseNotFoundError"},
            )
        try:
            status, body = 200, self._answer(path, url.path, q)
        except BadRequest as e:
            status, body = 400, {"message": "Invalid request data", "error": e.args[0]}
        if status == 200 and path in LEGACY and lf.cloud:
            body["_deprecation"] = DEPRECATION[path]
        self._send(
            path,
            status if body is not None else 404,
            body
            if body is not None
            else {
                "message": f"Trace {url.path.rsplit('/', 1)[1]} not found within authorized project",
                "error": "LangfuseNotFoundError",
            },
        )

    def _answer(self, path: str, raw_path: str, q: dict) -> dict | None:
        lf = self.lf
        if path == SCORES_V3:
            return lf.v3_scores(q)
        if path == OBSERVATIONS:
            return lf.v2_observations(q)
        fields = set(q["fields"][0].split(",")) if "fields" in q else None
        if path == TRACE:
            rec = lf.traces.get(raw_path.rsplit("/", 1)[1])
            if rec is None or rec["ingested"] > time.time() - lf.lag_s:
                return None
            return lf.trace_json(rec["json"], fields, full=True)
        return lf.legacy_list(path, q, fields)


TOPICS = [
    ("What is the capital of France?", "Paris."),
    ("How do I reverse a list in Python?", "Use `lst[::-1]`."),
    ("Explain recursion briefly.", "A function calling itself on a smaller input."),
    ("What's 17 * 3?", "51."),
    ("Translate 'good night' to German.", "Gute Nacht."),
    ("Give me a haiku about rain.", "Soft rain on the roof / ..."),
]


def chat(rng: random.Random, i: int) -> tuple[list[dict], object]:
    """A multi-turn OpenAI-style conversation and its answer (an assistant message or a string);
    some have a system prompt, some a tool call with its result."""
    msgs: list[dict] = []
    if rng.random() < 0.4:
        msgs.append({"role": "system", "content": "You are a helpful assistant."})
    for turn in range(rng.randint(1, 3)):
        q, a = TOPICS[(i + turn) % len(TOPICS)]
        msgs.append({"role": "user", "content": f"{q} (#{i})"})
        if turn < 2 and rng.random() < 0.6:
            msgs.append({"role": "assistant", "content": a})
    if msgs[-1]["role"] == "assistant":
        msgs.append({"role": "user", "content": "Thanks, and one more thing: why?"})
    if rng.random() < 0.2:
        msgs.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": f"call_{i}", "type": "function", "function": {"name": "search", "arguments": '{"q": "why"}'}}
                ],
            }
        )
        msgs.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "Because of reasons."})
    answer = f"Here is the answer to #{i}: " + "because " * rng.randint(3, 40)
    return msgs, ({"role": "assistant", "content": answer} if rng.random() < 0.5 else answer)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=1000)
    ap.add_argument("--feedback", type=float, default=1.0, help="share of traces with a thumb")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--legacy",
        default="ok",
        choices=["ok", "gone", "events_only"],
        help="legacy routes: served, 410 (Cloud org after the cutoff), 404 (v4 events_only)",
    )
    args = ap.parse_args(argv)
    lf = FakeLangfuse(legacy=args.legacy, cloud=args.legacy == "gone")
    lf.add_synthetic(args.traces, feedback=args.feedback)
    lf.start(args.port)
    print(lf.url, lf.public_key, lf.secret_key, flush=True)
    try:
        sys.stdin.read()  # serve until stdin closes (the parent ends) or Ctrl-C
    except KeyboardInterrupt:
        pass
    lf.stop()


if __name__ == "__main__":
    main()
