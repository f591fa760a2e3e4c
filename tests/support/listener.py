"""An HTTP listener on 127.0.0.1 that records what reaches it: a stand-in for a host that must
never receive a credential.

    with Listener() as ear:             # ear.base_url -> "http://127.0.0.1:PORT/v1"
        ...
    assert ear.seen == []               # [(method, path, {header: value}), ...]
    ear.credentials()                   # the Authorization headers it received

Every request is answered 401 with an OpenAI-style error body, so a client that did send its key
fails loudly instead of waiting.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

from tests.support.http_reply import LocalServer, send_json


class Listener(LocalServer):
    def __init__(self, prefix: str = "/v1"):
        self.seen: list[tuple[str, str, dict]] = []
        lock, seen = threading.Lock(), self.seen

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                with lock:
                    seen.append((self.command, self.path, dict(self.headers.items())))
                body = {
                    "error": {
                        "message": "Authentication Fails",
                        "type": "authentication_error",
                        "param": None,
                        "code": "invalid_request_error",
                    }
                }
                send_json(self, 401, json.dumps(body).encode())

            do_GET = do_POST = do_PUT = do_DELETE = _record

            def log_message(self, *args) -> None:
                pass

        self._serve(Handler, prefix)

    def credentials(self) -> list[str]:
        return [h[k] for _, _, h in self.seen for k in h if k.lower() in ("authorization", "api-key", "x-api-key")]
