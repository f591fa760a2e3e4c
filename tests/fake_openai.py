"""A scriptable OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks.

    with FakeOpenAI(api_key="sk-test") as srv:          # srv.base_url -> "http://127.0.0.1:PORT/v1"
        srv.script([{"kind": "blank"}, {"kind": "status", "status": 429, "retry_after": "1"}])
        srv.default = {"kind": "ok", "delay": 0.2}
        ...                                              # srv.count, srv.requests, srv.times

``POST /v1/chat/completions`` answers in the real response shape (id, object, created, model,
choices[].message, finish_reason, usage). Scripted actions are used first-in first-out, then
``default``. Kinds: ok (valid judgement JSON), blank (empty content), invalid (not JSON),
schema (JSON missing fields), status (an error status with an OpenAI error body; optional
retry_after header). An ok action may set score, safety_flag, comment, best_answer; any action
may carry ``delay`` seconds. Scripted actions go first; then ``srv.route = f`` answers with ``f(request body)`` where it returns
an action (per-item replies whatever the arrival order). A wrong Bearer key gets 401.
``GET /stats`` returns {"count": n}. ``python tests/fake_openai.py KEY DELAY`` serves in its own
process and prints its base URL (the benchmark does this so the server's CPU is not the client's).
Token usage is counted as UTF-8 bytes // 4, below the client's bytes-per-token cost bound.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler

try:
    from tests.http_reply import LocalServer, send_json
except ImportError:  # run as a script (python tests/fake_*.py): tests/ itself is on sys.path
    from http_reply import LocalServer, send_json


def _judgement(action: dict) -> str:
    score = action.get("score", 0.75)
    return json.dumps({"teacher_score": score, "safety_flag": action.get("safety_flag", score < 0.3),
                       "comment": action.get("comment", "fake judgement"), "best_answer": action.get("best_answer")})


class FakeOpenAI(LocalServer):
    def __init__(self, api_key: str = "sk-fake", default: dict | None = None):
        self.api_key = api_key
        self.default = default or {"kind": "ok"}
        self._script: deque[dict] = deque()
        self._lock = threading.Lock()
        self.requests: list[dict] = []  # request bodies, in arrival order
        self.times: list[float] = []  # time.monotonic() of each arrival
        self.statuses: list[int] = []
        # route(request body) -> action or None: per-item replies independent of arrival order
        self.route = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pool expects
            # headers and body go out in two writes: with Nagle on, the body waits for the client's
            # delayed ACK (~40 ms per request), which real servers do not add
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # request count, for a client in another process (the benchmark)
                if self.path == "/stats":
                    return self._send(200, {"count": fake.count})
                self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._send(401, {"error": {"message": "bad key", "type": "authentication_error"}})
                req = json.loads(body)
                with fake._lock:
                    fake.requests.append(req)
                    fake.times.append(time.monotonic())
                    if fake._script:  # scripted actions first, then the route, then the default
                        action = fake._script.popleft()
                    else:
                        action = (fake.route(req) if fake.route else None) or dict(fake.default)
                if action.get("delay"):
                    time.sleep(action["delay"])
                kind = action.get("kind", "ok")
                if kind == "status":
                    headers = {"Retry-After": str(action["retry_after"])} if "retry_after" in action else {}
                    return self._send(action["status"], {"error": {"message": f"scripted {action['status']}",
                                                                   "type": "server_error"}}, headers)
                content = {"ok": _judgement(action), "blank": "", "invalid": "{not json",
                           "schema": json.dumps({"teacher_score": 2, "comment": 1})}[kind]
                prompt_bytes = sum(len(m["content"].encode()) for m in req["messages"])
                usage = {"prompt_tokens": prompt_bytes // 4, "completion_tokens": len(content.encode()) // 4 + 1}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                self._send(200, {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": req["model"], "system_fingerprint": "fp_fake",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage})

            def _send(self, status: int, obj: dict, headers: dict | None = None):
                data = json.dumps(obj).encode()
                with fake._lock:
                    fake.statuses.append(status)
                send_json(self, status, data, headers)

        self._serve(Handler, "/v1")

    @property
    def count(self) -> int:
        """Chat requests that passed the key check."""
        return len(self.requests)

    def script(self, actions: list[dict]) -> None:
        with self._lock:
            self._script.extend(actions)



if __name__ == "__main__":
    import sys

    with FakeOpenAI(api_key=sys.argv[1], default={"kind": "ok", "delay": float(sys.argv[2])}) as srv:
        print(srv.base_url, flush=True)
        threading.Event().wait()
