"""Tiny LoRA adapters for the real-vLLM tests (tests/ops/test_vllm_real.py), built in seconds on CPU.

    base = tiny_base(tmp / "base")                      # the tiny Qwen2 at a head size vLLM's CPU backend runs
    random_adapter(base, tmp / "a1", seed=1)            # random LoRA weights: greedy output differs per seed
    greedy_reply(base, tmp / "a1", "Hi", 8)             # what that adapter answers, computed with transformers + peft

vLLM's CPU attention runs head sizes 32, 64, 80, ... (``v1/attention/backends/cpu_attn.py``
``get_supported_head_sizes``), not the default tiny model's 16 (64 hidden / 4 heads): this one has
2 heads of 32. Its tokenizer has no merges (vocab 64 asks for fewer tokens than the alphabet), so
a reply of n characters is n tokens: tests/ops/test_vllm_real.py sizes max_tokens by that.
"""

from __future__ import annotations

from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK = 8


def tiny_base(path: Path) -> Path:
    from irsflow.models.tiny import build_tiny_model

    return build_tiny_model(path, hidden=64, layers=2, heads=2, kv_heads=2, vocab_size=64)


def _lora(base: Path, init: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return get_peft_model(
        model, LoraConfig(r=RANK, lora_alpha=4 * RANK, target_modules=TARGETS, init_lora_weights=init)
    )


def random_adapter(base: Path, out: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    _lora(base).save_pretrained(out)  # init_lora_weights=False: A and B random, so it changes the output
    return out


def chat_ids(tok, messages: list[dict]) -> list[int]:
    return list(
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    )


def greedy_reply(base: Path, adapter: Path | None, prompt: str, max_tokens: int) -> str:
    """The greedy reply to one user message, as vLLM computes it (same chat template, float32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    ids = torch.tensor([chat_ids(tok, [{"role": "user", "content": prompt}])])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False)
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
