"""The one way the fake servers of the tests answer: a JSON body with its length and extra headers."""

from __future__ import annotations


def send_json(
    handler, status: int, data: bytes, headers: dict | None = None, content_type: str = "application/json"
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 for one handler class; ``with`` starts and stops it.
    ``LocalServer(Handler)`` directly, or subclasses call ``self._serve(Handler, "/v1")`` in their
    ``__init__``; ``base_url`` ends in the prefix, ``port`` is the bound port."""

    def __init__(self, handler=None, prefix: str = ""):
        if handler is not None:
            self._serve(handler, prefix)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def _serve(self, handler, prefix: str = "") -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
