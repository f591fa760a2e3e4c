"""Answers for evaluation: one model (base + optional LoRA adapter) loaded once, prompts batched.

    answers = generate_answers(model_path, adapter, prompts, n=1, max_new_tokens=64, batch_size=16)
    answers[i]  # n strings for prompt i (greedy when sampling is None; then n must be 1)

``batch_size=1`` is the one-at-a-time baseline of the benchmark.
"""
from __future__ import annotations

import time

from irsflow.generate import batch_seed, sample_batch
from irsflow.models import free_memory, load_model, load_tokenizer
from irsflow.store import ProgressFn, no_progress


def generate_answers(model_path: str, adapter: str | None, prompts: list[list[dict]], *, n: int = 1,
                     max_new_tokens: int = 128, sampling=None, seed: int = 0, batch_size: int = 16,
                     load_in_4bit: bool = False, progress: ProgressFn = no_progress) -> tuple[list[list[str]], dict]:
    if sampling is None and n != 1:
        raise ValueError("greedy decoding gives one answer per prompt: use n=1 or pass sampling")
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="left")
    model = load_model(model_path, adapter=adapter, load_in_4bit=load_in_4bit)
    model.eval()
    load_s = time.perf_counter() - t0
    out: list[list[str]] = []
    tokens = 0
    t1 = time.perf_counter()
    try:
        for b, start in enumerate(range(0, len(prompts), batch_size)):
            chunk = prompts[start:start + batch_size]
            for cands in sample_batch(model, tokenizer, chunk, n, max_new_tokens, sampling, batch_seed(seed, 0, b)):
                out.append([c["text"] for c in cands])
                tokens += sum(c["n_tokens"] for c in cands)
            progress(100.0 * len(out) / len(prompts))
        answer_s = time.perf_counter() - t1
    finally:
        del model
        free_memory()
    secs = time.perf_counter() - t0
    return out, {"seconds": round(secs, 3), "load_s": round(load_s, 3), "answer_s": round(answer_s, 4), "new_tokens": tokens, "prompts": len(prompts), "batch_size": batch_size}
