"""An OpenAI-compatible chat server on 127.0.0.1 that answers like DeepSeek V4, for tests and benchmarks.

    with FakeOpenAI(api_key="sk-test") as srv:          # srv.base_url -> "http://127.0.0.1:PORT/v1"
        srv.script([{"kind": "blank"}, {"kind": "status", "status": 429, "retry_after": "1"}])
        srv.default = {"kind": "ok", "delay": 0.2}
        ...                          # srv.count, srv.requests (bodies received), srv.replies, srv.times

Shapes are taken from the published definitions, not from our client:
- openai-python ``src/openai/types/chat/chat_completion.py`` (id, object "chat.completion", created,
  model, system_fingerprint, choices[].index/message/logprobs/finish_reason), ``types/completion_usage.py``
  (prompt_tokens, completion_tokens, total_tokens, prompt_tokens_details.cached_tokens,
  completion_tokens_details.reasoning_tokens) and ``_exceptions.py`` (error body
  ``{"error": {"message", "type", "param", "code"}}``, ``retry-after`` honoured on 429);
- DeepSeek API docs (api-docs.deepseek.com): "Create Chat Completion" (usage.prompt_cache_hit_tokens /
  prompt_cache_miss_tokens; finish_reason stop / length / content_filter / insufficient_system_resource),
  "Thinking Mode" (V4 thinks unless the body says ``"thinking": {"type": "disabled"}``; the chain of
  thought comes back as ``message.reasoning_content`` beside ``content``; ``max_tokens`` caps both
  together; completion_tokens include the reasoning tokens), "JSON Output" (``response_format``
  json_object needs the word "json" in the prompt), "Error Codes" (400, 401, 402 Insufficient Balance,
  422, 429, 500, 503 Server Overloaded) and "Rate Limit" (under load a non-streaming reply is preceded
  by empty lines that keep the connection alive).
Tokens are counted as ceil(UTF-8 bytes / 4), below the client's bytes-per-token cost bound; a reply
longer than ``max_tokens`` (reasoning first, then content) is cut there with finish_reason "length".

Kinds of action (scripted actions first-in first-out, then ``srv.route(body)`` if it returns one,
then ``default``); any action may carry ``delay`` seconds and ``keepalive`` empty lines before the body:
  ok        a judgement (score, safety_flag, comment, best_answer may be set); cut off if too long
  ramble    JSON that never ends: always cut off at max_tokens
  copy      the example reply shown in the prompt ("Example json output:" line), word for word
  blank     empty content;  invalid  not JSON;  schema  JSON that misses the schema
  filter    finish_reason content_filter;  resource  finish_reason insufficient_system_resource
  status    an HTTP error (``status``, optional ``retry_after`` header) with the error body
A request the real API refuses is refused the same way, whatever the script: a wrong Bearer key
(401), a model not in ``srv.models`` (400 "Model Not Exist"), JSON mode without the word "json" (400).
``GET /v1/models`` lists ``srv.models``; ``GET /stats`` returns {"count": n}.
``python tests/support/fake_openai.py KEY DELAY`` serves in its own process and prints its base URL (the
benchmark does this so the server's CPU is not the client's).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler

try:
    from tests.support.http_reply import LocalServer, send_json
except ImportError:  # run as a script (python tests/support/fake_*.py): its own folder is on sys.path
    from http_reply import LocalServer, send_json

DEEPSEEK_MODELS = ("deepseek-v4-flash", "deepseek-v4-pro")
# What a V4 model thinks before it answers; it holds a draft verdict that a client must never use.
REASONING = (
    'The user wants a json verdict. Draft: {"teacher_score": 0.01, "safety_flag": true, '
    '"comment": "draft in the reasoning"}. Check the red flags, then answer.'
)
ERRORS = {  # DeepSeek "Error Codes": status -> (message, type)
    400: ("Invalid Format", "invalid_request_error"),
    401: ("Authentication Fails", "authentication_error"),
    402: ("Insufficient Balance", "unknown_error"),
    422: ("Invalid Parameters", "invalid_request_error"),
    429: ("Rate Limit Reached", "rate_limit_error"),
    500: ("Server Error", "api_error"),
    503: ("Server Overloaded", "api_error"),
}


def tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def cut(text: str, n_tokens: int) -> str:
    return text.encode("utf-8")[: 4 * n_tokens].decode("utf-8", "ignore")


def error_body(status: int, message: str | None = None) -> dict:
    msg, kind = ERRORS.get(status, ("Error", "api_error"))
    return {
        "error": {
            "message": message or msg,
            "type": kind,
            "param": None,
            "code": "invalid_request_error" if kind == "invalid_request_error" else None,
        }
    }


def _judgement(action: dict) -> str:
    score = action.get("score", 0.75)
    return json.dumps(
        {
            "teacher_score": score,
            "safety_flag": action.get("safety_flag", score < 0.3),
            "comment": action.get("comment", "fake judgement"),
            "best_answer": action.get("best_answer"),
        }
    )


def _example(req: dict) -> str:
    """The example reply the prompt shows (the line after "Example json output:")."""
    text = "\n".join(m.get("content") or "" for m in req["messages"])
    return text.split("Example json output:\n", 1)[1].split("\n", 1)[0] if "Example json output:\n" in text else "{}"


class FakeOpenAI(LocalServer):
    def __init__(
        self,
        api_key: str = "sk-fake",
        default: dict | None = None,
        models=DEEPSEEK_MODELS,
        thinks_by_default: bool = True,
        reasoning: str = REASONING,
    ):
        self.api_key = api_key
        self.default = default or {"kind": "ok"}
        self.models = set(models)
        self.thinks_by_default = thinks_by_default  # DeepSeek V4: yes; a plain OpenAI-compatible server: no
        self.reasoning = reasoning
        self._script: deque[dict] = deque()
        self._lock = threading.Lock()
        self._prefixes: set[str] = set()  # system prompts seen: DeepSeek's context cache serves them again
        self.requests: list[dict] = []  # request bodies received, in arrival order
        self.replies: list[dict] = []  # the 200 bodies sent (usage included), in the order sent
        self.times: list[float] = []  # time.monotonic() of each arrival
        self.statuses: list[int] = []
        self.route = None  # route(request body) -> action or None: per-item replies whatever the order
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pool expects
            # headers and body go out in two writes: with Nagle on, the body waits for the client's
            # delayed ACK (~40 ms per request), which real servers do not add
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if self.path == "/stats":  # request count, for a client in another process (the benchmark)
                    return self._send(200, {"count": fake.count})
                if self.path.rstrip("/") in ("/v1/models", "/models") and self._authorized():
                    return self._send(
                        200,
                        {
                            "object": "list",
                            "data": [{"id": m, "object": "model", "owned_by": "deepseek"} for m in sorted(fake.models)],
                        },
                    )
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    return None
                self._send(404, error_body(404, "Not Found"))

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                    return True
                given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                self._send(401, error_body(401, f"Authentication Fails, Your api key: ****{given[-4:]} is invalid"))
                return False

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                # DeepSeek serves the API at the bare host and under /v1
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    return self._send(404, error_body(404, "Not Found"))
                if not self._authorized():
                    return None
                try:
                    req = json.loads(body)
                except ValueError:
                    return self._send(400, error_body(400, "Failed to deserialize the JSON body"))
                if req.get("model") not in fake.models:
                    return self._send(400, error_body(400, "Model Not Exist"))
                text = "\n".join(m.get("content") or "" for m in req.get("messages", []))
                if (req.get("response_format") or {}).get("type") == "json_object" and "json" not in text.lower():
                    return self._send(
                        400,
                        error_body(
                            400,
                            "Prompt must contain the word 'json' in some form "
                            "to use 'response_format' of type 'json_object'.",
                        ),
                    )
                with fake._lock:
                    fake.requests.append(req)
                    fake.times.append(time.monotonic())
                    if fake._script:  # scripted actions first, then the route, then the default
                        action = fake._script.popleft()
                    else:
                        action = (fake.route(req) if fake.route else None) or dict(fake.default)
                if action.get("delay"):
                    time.sleep(action["delay"])
                if action.get("kind") == "status":
                    headers = {"Retry-After": str(action["retry_after"])} if "retry_after" in action else {}
                    return self._send(action["status"], error_body(action["status"]), headers)
                self._send(200, fake.completion(req, action), keepalive=action.get("keepalive", 0))

            def _send(self, status: int, obj: dict, headers: dict | None = None, keepalive: int = 0):
                data = json.dumps(obj).encode()
                with fake._lock:
                    fake.statuses.append(status)
                if not keepalive:
                    return send_json(self, status, data, headers)
                # DeepSeek "Rate Limit": empty lines while the request waits, then the JSON body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(keepalive + len(data)))
                self.end_headers()
                for _ in range(keepalive):
                    self.wfile.write(b"\n")
                    self.wfile.flush()
                    time.sleep(0.05)
                self.wfile.write(data)

        self._serve(Handler, "/v1")

    def completion(self, req: dict, action: dict) -> dict:
        kind = action.get("kind", "ok")
        content = {
            "ok": lambda: _judgement(action),
            "blank": lambda: "",
            "invalid": lambda: "{not json",
            "schema": lambda: json.dumps({"teacher_score": 2, "comment": 1}),
            "copy": lambda: _example(req),
            "ramble": lambda: '{"teacher_score": 0.5, "comment": "' + "and also " * 10_000,
            "filter": lambda: "",
            "resource": lambda: "",
        }[kind]()
        thinking = (req.get("thinking") or {}).get("type", "enabled" if self.thinks_by_default else "disabled")
        reasoning = self.reasoning if thinking == "enabled" else None
        budget = req.get("max_tokens") or req.get("max_completion_tokens") or 4096
        finish = {"filter": "content_filter", "resource": "insufficient_system_resource"}.get(kind, "stop")
        n_reason = tokens(reasoning) if reasoning else 0
        if n_reason >= budget:  # the thinking alone used the budget: no answer at all
            reasoning, content, n_reason, finish = cut(reasoning, budget), "", budget, "length"
        elif tokens(content) > budget - n_reason:
            content, finish = cut(content, budget - n_reason), "length"
        message = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        system = req["messages"][0].get("content") or "" if req["messages"] else ""
        prompt = sum(tokens(m.get("content") or "") + 4 for m in req["messages"])
        with self._lock:
            hit = tokens(system) if system in self._prefixes else 0
            self._prefixes.add(system)
        completion = tokens(content) + n_reason
        reply = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req["model"],
            "system_fingerprint": "fp_fake_v4",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": hit},
                "completion_tokens_details": {"reasoning_tokens": n_reason},
                "prompt_cache_hit_tokens": hit,
                "prompt_cache_miss_tokens": prompt - hit,
            },
        }
        with self._lock:
            self.replies.append(reply)
        return reply

    @property
    def count(self) -> int:
        """Chat requests that passed the checks (key, model, JSON mode)."""
        return len(self.requests)

    def script(self, actions: list[dict]) -> None:
        with self._lock:
            self._script.extend(actions)


if __name__ == "__main__":
    import sys

    with FakeOpenAI(api_key=sys.argv[1], default={"kind": "ok", "delay": float(sys.argv[2])}) as srv:
        print(srv.base_url, flush=True)
        threading.Event().wait()
