"""The one way the fake servers of the tests answer: a JSON body with its length and extra headers."""
from __future__ import annotations


def send_json(handler, status: int, data: bytes, headers: dict | None = None,
              content_type: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)
