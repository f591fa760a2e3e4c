"""A vLLM OpenAI-server stand-in on 127.0.0.1: runtime LoRA loading as vLLM implements it.

    with FakeVLLM(base_model="Qwen/Qwen2.5-0.5B-Instruct") as v:   # v.base_url -> http://127.0.0.1:PORT/v1
        v.fail_next = {"/v1/chat/completions": 500}                 # one scripted failure per path
        ... v.adapters (name -> path), v.calls (path, body) in order

POST /v1/load_lora_adapter {"lora_name","lora_path","load_inplace"?}: 200 plain text; 400 JSON
when the name is loaded and load_inplace is not true, or the folder has no adapter_config.json;
404 when the path does not exist. POST /v1/unload_lora_adapter: 200 / 404. GET /v1/models lists
the base model and every adapter (root = path, parent = base). POST /v1/chat/completions answers
for the base or a loaded adapter, 404 otherwise.
"""
from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.http_reply import LocalServer, send_json


class FakeVLLM(LocalServer):
    def __init__(self, base_model: str = "base-model"):
        self.base_model = base_model
        self.adapters: dict[str, str] = {}
        self.calls: list[tuple[str, dict]] = []
        self.fail_next: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _err(self, status: int, msg: str):
                send_json(self, status, json.dumps({"error": {"message": msg, "type": "BadRequestError" if status == 400
                                                             else "NotFoundError", "code": status}}).encode())

            def _text(self, text: str):  # vLLM answers a load/unload with plain text
                send_json(self, 200, text.encode(), content_type="text/plain; charset=utf-8")

            def do_GET(self):
                fake.calls.append((self.path, {}))
                if self.path != "/v1/models":
                    return self._err(404, "not found")
                data = [{"id": fake.base_model, "object": "model", "created": 0, "owned_by": "vllm",
                         "root": fake.base_model, "parent": None}]
                data += [{"id": n, "object": "model", "created": 0, "owned_by": "vllm", "root": p,
                          "parent": fake.base_model} for n, p in fake.adapters.items()]
                send_json(self, 200, json.dumps({"object": "list", "data": data}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.calls.append((self.path, body))
                if self.path in fake.fail_next:
                    return self._err(fake.fail_next.pop(self.path), "scripted failure")
                if self.path == "/v1/load_lora_adapter":
                    name, path = body.get("lora_name"), body.get("lora_path")
                    if name in fake.adapters and not body.get("load_inplace"):
                        return self._err(400, f"The lora adapter '{name}' has already been loaded. If you want to "
                                              "load the adapter in place, set 'load_inplace' to True.")
                    if not path or not Path(path).exists():
                        return self._err(404, f"No adapter found for {path}")
                    if not (Path(path) / "adapter_config.json").is_file():
                        return self._err(400, f"Invalid LoRA adapter: {path} has no adapter_config.json")
                    fake.adapters[name] = path
                    return self._text(f"Success: LoRA adapter '{name}' added successfully.")
                if self.path == "/v1/unload_lora_adapter":
                    name = body.get("lora_name")
                    if name not in fake.adapters:
                        return self._err(404, f"The lora adapter '{name}' cannot be found.")
                    del fake.adapters[name]
                    return self._text(f"Success: LoRA adapter '{name}' removed successfully.")
                if self.path == "/v1/chat/completions":
                    model = body.get("model")
                    if model != fake.base_model and model not in fake.adapters:
                        return self._err(404, f"The model `{model}` does not exist.")
                    return send_json(self, 200, json.dumps({
                        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode())
                self._err(404, "not found")

        self._serve(Handler, "/v1")

    def loads(self) -> list[dict]:
        return [b for p, b in self.calls if p == "/v1/load_lora_adapter"]
