"""Start vLLM's OpenAI server with ``load_inplace`` fixed: an adapter (re)loaded in place is read
from disk once, not at every decoding step. The arguments are those of
``python -m vllm.entrypoints.openai.api_server``:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True python infra/vllm_lora_fix.py --model DIR --enable-lora ...

Why (vLLM 0.32.0): ``POST /v1/load_lora_adapter`` stores the ``LoRARequest`` it built, flag
included, as the name's request (``entrypoints/openai/models/serving.py``, ``load_lora_adapter``:
``self.lora_requests[lora_name] = lora_request``), every chat request naming the adapter carries it,
and the worker reloads the adapter at every step while the flag is set
(``lora/worker_manager.py``, ``LRUCacheWorkerLoRAManager.add_adapter``: ``... or
lora_request.load_inplace``). Requests that were running across a reload also write their old
files back into the shared ``lora_int_id`` at each step. Upstream: vllm-project/vllm issue #33791,
open PRs #36373 / #41482 (not in 0.32.0). This applies #36373's change: once the load succeeded,
the stored request drops the flag. The load itself still reloads in place (the engine validates the
new files before it swaps them, so a failed load leaves the old adapter served).

The patch is on the API server process only. As a vLLM general plugin instead of this launcher:
an entry point ``[vllm.general_plugins] irsflow_lora_fix = vllm_lora_fix:register`` in a package
installed next to vLLM. Checked by tests/ops/test_vllm_real.py (files deleted after a load, the
adapter still answers).
"""

from __future__ import annotations

import logging
import runpy
import sys

log = logging.getLogger("irsflow.vllm_lora_fix")


def register() -> None:
    import msgspec
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels

    original = OpenAIServingModels.load_lora_adapter
    if getattr(original, "irsflow_fixed", False):
        return

    async def load_lora_adapter(self, request, base_model_name=None):
        out = await original(self, request, base_model_name)
        # No await between the original's return and this swap: no request can pick up the
        # flagged one in between (asyncio runs one coroutine at a time).
        stored = self.lora_requests.get(request.lora_name)
        if isinstance(out, str) and stored is not None and stored.load_inplace:
            self.lora_requests[request.lora_name] = msgspec.structs.replace(stored, load_inplace=False)
        return out

    load_lora_adapter.irsflow_fixed = True
    OpenAIServingModels.load_lora_adapter = load_lora_adapter
    log.warning("irsflow: load_lora_adapter patched: load_inplace is not kept on served adapters")


if __name__ == "__main__":
    register()
    sys.argv = ["vllm.entrypoints.openai.api_server", *sys.argv[1:]]
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
