"""A Langfuse-compatible public API on 127.0.0.1, for tests and benchmarks (no Langfuse needed).

    with FakeLangfuse() as lf:                       # lf.url, lf.public_key, lf.secret_key
        lf.add_synthetic(500, feedback=0.5)          # chat traces, half of them with a thumb
        tid = lf.add_trace(ts, input=[...], output="...");  lf.add_score(tid, 1, ts)
        lf.fail_next("/api/public/v2/scores", 429, retry_after="2")
        lf.lag_s = 60                                # items ingested in the last 60 s are invisible
        lf.counts["/api/public/traces/{id}"]         # requests per path; lf.log: (time, path, status, query)

    python tests/fake_langfuse.py --traces 10000     # serve in the foreground (benchmarks); prints
                                                     # "<url> <public key> <secret key>" on one line

Serves what langfuse 4.x's generated client calls: ``GET /api/public/v2/scores`` (newest first,
``fromTimestamp`` inclusive, ``toTimestamp`` exclusive, name/dataType/environment/traceId/scoreIds,
limit <= 100, and like Langfuse only scores whose trace is visible), ``GET /api/public/traces``
(TraceWithDetails; fromTimestamp/toTimestamp, orderBy timestamp.asc|desc, fields) and
``GET /api/public/traces/{id}`` (TraceWithFullDetails, full ScoreV1 scores, no observations).
Shapes follow the SDK's pydantic types: camelCase, ``data`` + ``meta {page, limit, totalItems,
totalPages}``, BOOLEAN scores as value 1/0 with stringValue "True"/"False". Basic auth, else 401.
"""
from __future__ import annotations

import base64
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    from tests.http_reply import send_json
except ImportError:  # run as a script (python tests/fake_*.py): tests/ itself is on sys.path
    from http_reply import send_json

SCORES, TRACES, TRACE = "/api/public/v2/scores", "/api/public/traces", "/api/public/traces/{id}"


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class FakeLangfuse:
    def __init__(self, public_key: str = "pk-lf-fake", secret_key: str = "sk-lf-fake-secret"):
        self.public_key, self.secret_key = public_key, secret_key
        self.lag_s = 0.0
        self.traces: dict[str, dict] = {}       # id -> {"ts", "ingested", "json"}
        self.scores: dict[str, dict] = {}
        self.trace_scores: dict[str, list[str]] = {}
        self.counts: Counter = Counter()
        self.log: list[tuple[float, str, int, str]] = []  # (arrival time, path, status, query string)
        self.hooks: list = []                   # fn(path, params, status): runs after a response is
                                                # computed, before it is sent (data changes mid-read)
        self._fail: dict[str, list[tuple[int, str | None]]] = {}
        self._lock = threading.Lock()
        self._sorted: dict[str, list[dict]] = {}
        self._cache: dict[tuple, list[dict]] = {}  # query minus page -> rows, while nothing is hidden by lag
        self._version = 0
        self._newest_ingest = 0.0
        self._n = 0
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

    # --- data ------------------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:08d}{random.Random(self._n).getrandbits(64):016x}"

    def add_trace(self, timestamp: datetime, input=None, output=None, *, id: str | None = None, name: str = "chat",
                  user_id: str | None = "user-1", session_id: str | None = None, tags=(), metadata=None,
                  environment: str = "default", ingested_at: float | None = None) -> str:
        id = id or self._id("t")
        body = {"id": id, "timestamp": iso(timestamp), "name": name, "input": input, "output": output,
                "sessionId": session_id, "release": None, "version": None, "userId": user_id,
                "metadata": metadata or {}, "tags": list(tags), "public": False, "environment": environment,
                "htmlPath": f"/project/fake/traces/{id}", "latency": 1.5, "totalCost": 0.0001}
        with self._lock:
            self.traces[id] = {"ts": timestamp.timestamp(), "ingested": time.time() if ingested_at is None
                               else ingested_at, "json": body}
            self._changed(self.traces[id]["ingested"], "traces")
        return id

    def add_score(self, trace_id: str, value, timestamp: datetime, *, name: str = "user-feedback",
                  data_type: str = "BOOLEAN", comment: str | None = None, id: str | None = None,
                  environment: str = "default", ingested_at: float | None = None) -> str:
        """``value``: 1/0 (or True/False) for BOOLEAN, a string for CATEGORICAL, a number for NUMERIC."""
        id = id or self._id("s")
        body = {"id": id, "traceId": trace_id, "sessionId": None, "observationId": None, "datasetRunId": None,
                "name": name, "source": "API", "timestamp": iso(timestamp), "createdAt": iso(timestamp),
                "updatedAt": iso(timestamp), "authorUserId": None, "comment": comment, "metadata": {},
                "configId": None, "queueId": None, "environment": environment, "dataType": data_type}
        if data_type == "BOOLEAN":
            body.update(value=float(value), stringValue="True" if float(value) == 1 else "False")
        elif data_type == "CATEGORICAL":
            body.update(value=0.0, stringValue=str(value))
        else:
            body.update(value=float(value))
        with self._lock:
            old = self.scores.get(id)
            if old is None:
                self.trace_scores.setdefault(trace_id, []).append(id)
            self.scores[id] = {"ts": timestamp.timestamp(), "ingested": time.time() if ingested_at is None
                               else ingested_at, "json": body}
            self._changed(self.scores[id]["ingested"], "scores")
        return id

    def add_synthetic(self, n: int, *, start: datetime | None = None, every_s: float = 30.0, feedback: float = 1.0,
                      up: float = 0.7, seed: int = 0, name: str = "user-feedback") -> list[str]:
        """``n`` chat traces ``every_s`` apart (ending about now); a share ``feedback`` of them get a
        thumb (up with probability ``up``) 5-300 s after the trace. Returns the trace ids."""
        rng = random.Random(seed)
        start = start or datetime.now(timezone.utc) - timedelta(seconds=n * every_s + 600)
        ids = []
        for i in range(n):
            ts = start + timedelta(seconds=i * every_s)
            messages, answer = chat(rng, i)
            tid = self.add_trace(ts, messages if rng.random() < 0.8 else {"messages": messages}, answer,
                                 user_id=f"user-{rng.randrange(50)}", session_id=f"sess-{i // 3}",
                                 tags=["prod"], metadata={"model": "smol", "turns": len(messages)})
            if rng.random() < feedback:
                self.add_score(tid, int(rng.random() < up), ts + timedelta(seconds=rng.uniform(5, 300)), name=name,
                               comment=rng.choice([None, None, "thanks", "wrong answer"]))
            ids.append(tid)
        return ids

    def fail_next(self, path: str, status: int = 429, retry_after: str | None = None, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` (SCORES, TRACES or TRACE) answer ``status``."""
        self._fail.setdefault(path, []).extend([(status, retry_after)] * times)

    # --- queries ---------------------------------------------------------------------------------
    def _changed(self, ingested: float, kind: str) -> None:
        self._sorted.pop(kind, None)
        self._cache.clear()
        self._version += 1
        self._newest_ingest = max(self._newest_ingest, ingested)

    def rows(self, path: str, q: dict) -> list[dict]:
        """All rows matching ``q`` (page aside). Cached while every item is visible, so that reading
        10,000 items page by page does not re-filter them all on every page."""
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
        rows = _window(rows, q)
        for key, field in (("name", "name"), ("dataType", "dataType"), ("traceId", "traceId")):
            if key in q:
                rows = [r for r in rows if r["json"][field] == q[key][0]]
        if "environment" in q:
            rows = [r for r in rows if r["json"]["environment"] in _many(q["environment"])]
        if "scoreIds" in q:
            wanted = set(_many(q["scoreIds"]))
            rows = [r for r in rows if r["json"]["id"] in wanted]
        return [r["json"] for r in rows]

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
        q = parse_qs(url.query)
        if url.path == SCORES:
            path = SCORES
        elif url.path == TRACES:
            path = TRACES
        elif url.path.startswith(TRACES + "/"):
            path = TRACE
        else:
            return self._send(url.path, 404, {"message": "Not found"})
        expected = "Basic " + base64.b64encode(f"{lf.public_key}:{lf.secret_key}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._send(path, 401, {"error": "Unauthorized", "message": "Invalid credentials"})
        with lf._lock:
            fail = lf._fail.get(path, []).pop(0) if lf._fail.get(path) else None
        if fail:
            status, retry_after = fail
            return self._send(path, status, {"message": f"injected {status}"},
                              {"Retry-After": retry_after} if retry_after is not None else None)
        fields = set(q["fields"][0].split(",")) if "fields" in q else None
        if path == TRACE:
            tid = url.path.rsplit("/", 1)[1]
            rec = lf.traces.get(tid)
            if rec is None or rec["ingested"] > time.time() - lf.lag_s:
                return self._send(path, 404, {"message": f"Trace {tid} not found within authorized project"})
            self._send(path, 200, lf.trace_json(rec["json"], fields, full=True))
        else:
            page, limit = int(q.get("page", ["1"])[0]), int(q.get("limit", ["50"])[0])
            if limit > 100 or limit < 1 or page < 1:
                return self._send(path, 400, {"message": "Invalid request data: limit must be 1..100, page >= 1"})
            rows = lf.rows(path, q)
            data = rows[(page - 1) * limit: page * limit]
            if path == TRACES:
                data = [lf.trace_json(t, fields, full=False) for t in data]
            self._send(path, 200, {"data": data, "meta": {"page": page, "limit": limit, "totalItems": len(rows),
                                                          "totalPages": math.ceil(len(rows) / limit)}})


TOPICS = [("What is the capital of France?", "Paris."), ("How do I reverse a list in Python?", "Use `lst[::-1]`."),
          ("Explain recursion briefly.", "A function calling itself on a smaller input."),
          ("What's 17 * 3?", "51."), ("Translate 'good night' to German.", "Gute Nacht."),
          ("Give me a haiku about rain.", "Soft rain on the roof / ...")]


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
        msgs.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "search", "arguments": '{"q": "why"}'}}]})
        msgs.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "Because of reasons."})
    answer = f"Here is the answer to #{i}: " + "because " * rng.randint(3, 40)
    return msgs, ({"role": "assistant", "content": answer} if rng.random() < 0.5 else answer)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=1000)
    ap.add_argument("--feedback", type=float, default=1.0, help="share of traces with a thumb")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    lf = FakeLangfuse()
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
