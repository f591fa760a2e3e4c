"""Generate phase: sample ``n_candidates`` answers per question with the model's chat template.

Prompts are batched (``gen_batch_size`` questions per ``generate()`` call, each expanded to
``n_candidates`` sequences) with left padding. Each batch is seeded from (seed, iteration,
batch index), and the sampling settings are stored with every row. The model is loaded inside
``generate_candidates`` and released before it returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from irsflow.dataset import Question
from irsflow.models import free_memory, load_model, load_tokenizer, stop_token_ids
from irsflow.store import ProgressFn, no_progress

log = logging.getLogger("irsflow.loop.generate")


def build_messages(q: Question, top_k: int, system_prompt: str, extra_system: str = "") -> list[dict]:
    """System turn (instructions + per-question extra text such as codebook rules + numbered top-k
    contexts), then the question as the user turn."""
    ctx = q.top_contexts(top_k)
    system = system_prompt + extra_system
    if ctx:
        system += "\n\nContext:\n" + "\n".join(f"[{i}] {c}" for i, c in enumerate(ctx, 1))
    return [{"role": "system", "content": system}, {"role": "user", "content": q.question}]


def batch_seed(seed: int, iteration: int, batch_index: int) -> int:
    return (seed * 1_000_003 + iteration * 10_007 + batch_index) % (2**31 - 1)


def prefill_cache(model, ids, mask, n: int):
    """Run the shared prompt once and copy its KV cache for the ``n`` samples of each prompt.

    ``generate(num_return_sequences=n)`` would repeat the prompt n times before the forward pass;
    prompts with contexts are long, so prefill dominates and sharing it saves most of it. The last
    prompt token is left for ``generate`` so it produces the first logits itself."""
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True, logits_to_keep=1
    )  # only the cache is needed; skip full-vocabulary logits per token
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    return cache


def sample_batch(
    model, tokenizer, prompts: list[list[dict]], n: int, max_new_tokens: int, sampling, seed: int
) -> list[list[dict]]:
    """One ``generate()`` call: ``len(prompts)`` x ``n`` samples -> per prompt, n candidate dicts.
    ``sampling=None`` decodes greedily (use ``n=1``)."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    stops = stop_token_ids(tokenizer)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.inference_mode():
        cache = prefill_cache(model, ids, mask, n)
        torch.manual_seed(seed)
        # sampling=None: greedy (evaluation); otherwise the recorded sampling settings
        how = (
            dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
            if sampling is not None
            else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        )
        out = model.generate(
            input_ids=ids.repeat_interleave(n, dim=0),
            attention_mask=mask.repeat_interleave(n, dim=0),
            past_key_values=cache,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
            **how,
        )
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    result: list[list[dict]] = [[] for _ in prompts]
    for row, ids in enumerate(new):
        cut = next((i for i, t in enumerate(ids) if t in stops), None)
        body = ids[:cut] if cut is not None else [t for t in ids if t != tokenizer.pad_token_id]
        result[row // n].append(
            {
                "text": tokenizer.decode(body, skip_special_tokens=True).strip(),
                "n_tokens": len(body),
                "finish_reason": "stop" if cut is not None else "length",
            }
        )
    return result


def generate_candidates(
    model_path: str,
    adapter: str | None,
    questions: list[Question],
    *,
    n_candidates: int,
    max_new_tokens: int,
    sampling,
    seed: int,
    iteration: int,
    gen_batch_size: int,
    top_k: int,
    system_prompt: str,
    load_in_4bit: bool = False,
    progress: ProgressFn = no_progress,
    extra_system: Mapping[str, str] | None = None,
) -> tuple[list[dict], dict]:
    """Returns (one row per question, phase stats incl. memory after release). ``extra_system``:
    question id -> text appended to that question's system prompt (codebook rules)."""
    extra_system = extra_system or {}
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="left")
    model = load_model(model_path, adapter=adapter, load_in_4bit=load_in_4bit)
    model.eval()
    rows: list[dict] = []
    n_tokens = 0
    try:
        for b, start in enumerate(range(0, len(questions), gen_batch_size)):
            chunk = questions[start : start + gen_batch_size]
            prompts = [build_messages(q, top_k, system_prompt, extra_system.get(q.id, "")) for q in chunk]
            s = batch_seed(seed, iteration, b)
            samples = sample_batch(model, tokenizer, prompts, n_candidates, max_new_tokens, sampling, s)
            how = (
                {
                    "do_sample": True,
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "top_k": sampling.top_k,
                }
                if sampling is not None
                else {"do_sample": False}
            )  # None: greedy
            settings = {
                **how,
                "max_new_tokens": max_new_tokens,
                "n_candidates": n_candidates,
                "seed": s,
                "adapter": adapter,
                "gen_batch_size": gen_batch_size,
            }
            for q, p, cands in zip(chunk, prompts, samples):
                n_tokens += sum(c["n_tokens"] for c in cands)
                rows.append(
                    {
                        "id": q.id,
                        "question": q.question,
                        "context": "\n\n".join(q.top_contexts(top_k)),
                        "reference": q.reference,
                        "prompt": p,
                        "candidates": cands,
                        "sampling": settings,
                    }
                )
            progress(100.0 * len(rows) / len(questions))
            log.info("generated %d/%d questions", len(rows), len(questions))
    finally:
        del model
        mem_after = free_memory()
    secs = time.perf_counter() - t0
    return rows, {
        "seconds": secs,
        "new_tokens": n_tokens,
        "tokens_per_s": n_tokens / secs if secs else 0.0,
        "mem_after_release": mem_after,
    }
