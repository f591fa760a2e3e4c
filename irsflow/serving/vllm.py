"""Hot-load a LoRA adapter into a running vLLM OpenAI-compatible server, verified, with rollback.

    s = VLLMSettings(base_url="http://gpu-box:8000/v1", serving_name="assistant")
    hot_load(s, "/models/adapters/v7", previous="/models/adapters/v6")

The server must run with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``, and see the
adapter path on its own filesystem. Steps: ``POST /v1/load_lora_adapter`` (in place under the
stable serving name, so clients never change model names), ``GET /v1/models`` must list the name
with the new path as its root, and one chat completion naming it must answer. On any failure
after the load, ``previous`` is loaded back the same way (or the name unloaded when there was no
previous) and :class:`DeployError` is raised: the run fails loudly, the old adapter stays served.
"""
from __future__ import annotations

import logging
import os

import httpx
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("irsflow.serving")


class VLLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: str = Field("http://127.0.0.1:8000/v1", description="the server's OpenAI base URL (…/v1)")
    serving_name: str = Field("irsflow-champion", min_length=1, description="the LoRA name clients ask for")
    timeout_s: float = Field(120.0, gt=0, description="loading an adapter can take a while on a busy GPU")
    verify_prompt: str = "Reply with the single word OK."
    api_key_env: str = Field("VLLM_API_KEY", description="env var holding the server's --api-key, if any")


class DeployError(RuntimeError):
    """The adapter could not be served; the previous one (if any) is being served."""


def _error(r: httpx.Response) -> str:
    try:
        body = r.json()
        msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
        return f"HTTP {r.status_code}: {msg or body}"
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:200]}"


class VLLMClient:
    def __init__(self, s: VLLMSettings):
        self.s = s
        key = os.environ.get(s.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=s.base_url.rstrip("/"), timeout=s.timeout_s, headers=headers)

    def close(self) -> None:
        self.http.close()

    def load(self, path: str, inplace: bool = True) -> None:
        r = self.http.post("/load_lora_adapter", json={"lora_name": self.s.serving_name, "lora_path": path,
                                                       "load_inplace": inplace})
        if r.status_code != 200:
            raise DeployError(f"vLLM load_lora_adapter {self.s.serving_name!r} <- {path}: {_error(r)}")

    def unload(self) -> None:
        r = self.http.post("/unload_lora_adapter", json={"lora_name": self.s.serving_name})
        if r.status_code not in (200, 404):
            raise DeployError(f"vLLM unload_lora_adapter {self.s.serving_name!r}: {_error(r)}")

    def served_path(self) -> str | None:
        """The path the serving name is loaded from, per ``/v1/models`` (None: not listed)."""
        r = self.http.get("/models")
        if r.status_code != 200:
            raise DeployError(f"vLLM /v1/models: {_error(r)}")
        for m in r.json().get("data", []):
            if m.get("id") == self.s.serving_name:
                return m.get("root")
        return None

    def chat(self) -> str:
        r = self.http.post("/chat/completions", json={
            "model": self.s.serving_name, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": self.s.verify_prompt}]})
        if r.status_code != 200:
            raise DeployError(f"vLLM chat completion with {self.s.serving_name!r}: {_error(r)}")
        body = r.json()
        if body.get("model") not in (None, self.s.serving_name) or not body.get("choices"):
            raise DeployError(f"vLLM chat completion answered for {body.get('model')!r} without choices")
        return body["choices"][0]["message"].get("content") or ""


def hot_load(s: VLLMSettings, adapter_path: str, previous: str | None = None) -> dict:
    """Serve ``adapter_path`` under ``s.serving_name``; on failure restore ``previous`` and raise."""
    client = VLLMClient(s)
    try:
        client.load(adapter_path)  # a failure here changed nothing: the previous adapter is served
        try:
            root = client.served_path()
            if root != adapter_path:
                raise DeployError(f"vLLM /v1/models lists {s.serving_name!r} from {root!r}, not {adapter_path!r}")
            reply = client.chat()
        except Exception as err:
            _restore(client, previous)
            raise DeployError(f"{err}; " + (f"restored {previous}" if previous else "unloaded the new adapter")) from err
        log.info("vLLM serves %s as %r (verified: %r)", adapter_path, s.serving_name, reply[:40])
        return {"serving_name": s.serving_name, "path": adapter_path, "verify_reply": reply, "previous": previous}
    finally:
        client.close()


def _restore(client: VLLMClient, previous: str | None) -> None:
    try:
        if previous:
            client.load(previous)
        else:
            client.unload()
    except Exception as err:  # noqa: BLE001 - the original failure is what gets raised
        log.error("vLLM: could not restore the previous adapter: %s", err)
