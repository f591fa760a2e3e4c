"""Batched vs. one-at-a-time candidate generation on the real SmolLM2-135M-Instruct (CPU).

Workload: the first 8 demo questions, 4 candidates each, 32 new tokens, top_k=2 contexts in the
system turn, the default request's system prompt and sampling settings
(``TrainRequest().shared.sampling``), the model loaded once (float32 on CPU).

    A  batched: all 8 prompts in one ``sample_batch`` call with n=4 (32 sequences).
    B  sequential: 32 ``sample_batch`` calls, each with one prompt and n=1.

A and B run alternately, 3 times each (A B A B A B); the medians are reported, with tokens/s
counted from the tokens actually generated (sampling may stop early at <|im_end|>).
Target: B / A (time) >= 4x. Figures also go to ``benchmarks/out/bench_generation.json``.

Threads: torch runs with ``--threads`` intra-op threads, 1 by default. On a shared 2-core machine
two OpenMP threads stall whenever another process holds a core: each parallel matmul then waits
for a scheduler slice (measured here under load 5: a [16x576]@[576x1536] matmul took 17 ms with
2 threads and 0.4 ms with 1), which swamps the comparison. ``--threads 0`` keeps torch's default.

Run (from the repository root; about 6 minutes on 2 busy CPU cores, plus about 30 s on the first
run to convert the embedded GGUF):

    HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/python benchmarks/bench_generation.py
"""

from __future__ import annotations

import os

from _bench import add_threads_arg, isolate, run, set_threads

_TMP = isolate("generation")

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

MODEL_ID = "builtin:smollm2-135m-instruct"
N_QUESTIONS = 8
N_CANDIDATES = 4
MAX_NEW_TOKENS = 32
TOP_K = 2
REPEATS = 3
OUT = Path(__file__).resolve().parent / "out" / "bench_generation.json"


def main(argv: list[str] | None = None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_threads_arg(ap)
    ap.add_argument(
        "--questions",
        type=int,
        default=N_QUESTIONS,
        help="prompts in the batched call (the demo batches 16: configs/demo.json gen_batch_size)",
    )
    ap.add_argument("--repeats", type=int, default=REPEATS)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    n_questions, repeats = args.questions, args.repeats

    import torch

    from irsflow.config import TrainRequest
    from irsflow.dataset import load_questions
    from irsflow.loop.generate import batch_seed, build_messages, sample_batch
    from irsflow.models import load_model, load_tokenizer, resolve_model

    req = TrainRequest()
    sampling = req.shared.sampling
    t = time.perf_counter()
    path = resolve_model(MODEL_ID)
    resolve_s = time.perf_counter() - t
    t = time.perf_counter()
    tokenizer = load_tokenizer(path, padding_side="left")
    model = load_model(path)
    model.eval()
    load_s = time.perf_counter() - t

    questions = load_questions("builtin:demo", n_questions)
    prompts = [build_messages(q, TOP_K, req.system_prompt) for q in questions]
    prompt_tokens = [
        len(
            tokenizer(
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True), add_special_tokens=False
            )["input_ids"]
        )
        for p in prompts
    ]

    # Warm-up, not timed: one short call of each shape.
    sample_batch(model, tokenizer, prompts[:2], 2, 4, sampling, seed=0)
    sample_batch(model, tokenizer, prompts[:1], 1, 4, sampling, seed=0)

    def run_a(rep: int):
        t0 = time.perf_counter()
        out = sample_batch(
            model, tokenizer, prompts, N_CANDIDATES, MAX_NEW_TOKENS, sampling, seed=batch_seed(req.seed, rep, 0)
        )
        dt = time.perf_counter() - t0
        cands = [c for per_prompt in out for c in per_prompt]
        return dt, cands

    def run_b(rep: int):
        t0 = time.perf_counter()
        cands = []
        i = 0
        for p in prompts:
            for _ in range(N_CANDIDATES):
                cands += sample_batch(
                    model, tokenizer, [p], 1, MAX_NEW_TOKENS, sampling, seed=batch_seed(req.seed, rep, i)
                )[0]
                i += 1
        return time.perf_counter() - t0, cands

    times = {"A": [], "B": []}
    tokens = {"A": [], "B": []}
    finish = {}
    for rep in range(1, repeats + 1):
        for name, fn in (("A", run_a), ("B", run_b)):
            dt, cands = fn(rep)
            assert len(cands) == n_questions * N_CANDIDATES, len(cands)
            n_tok = sum(c["n_tokens"] for c in cands)
            times[name].append(dt)
            tokens[name].append(n_tok)
            finish[name] = sum(c["finish_reason"] == "stop" for c in cands)
            print(f"  repeat {rep}: {name} {dt:.2f}s, {n_tok} new tokens ({n_tok / dt:.1f} tok/s)", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: statistics.median([n / s for n, s in zip(tokens[k], times[k])]) for k in times}
    speedup = med["B"] / med["A"]
    report = {
        "benchmark": "generation",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "device": str(model.device),
            "dtype": str(model.dtype),
        },
        "model": {"id": MODEL_ID, "path": path, "resolve_seconds": resolve_s, "load_seconds": load_s},
        "workload": {
            "questions": n_questions,
            "candidates_per_question": N_CANDIDATES,
            "max_new_tokens": MAX_NEW_TOKENS,
            "top_k": TOP_K,
            "prompt_tokens": prompt_tokens,
            "sampling": sampling.model_dump(),
        },
        "repeats": repeats,
        "seconds": times,
        "new_tokens": tokens,
        "median_seconds": med,
        "median_tokens_per_s": tps,
        "stopped_at_eos_last_repeat": finish,
        "speedup_b_over_a": speedup,
        "target_speedup": 4.0,
        "meets_target": speedup >= 4.0,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"generation benchmark: {MODEL_ID} on {model.device} ({model.dtype}, {threads} torch thread(s)), "
        f"{n_questions} questions x {N_CANDIDATES} candidates x {MAX_NEW_TOKENS} new tokens, "
        f"prompts {min(prompt_tokens)}-{max(prompt_tokens)} tokens"
    )
    print(
        f"  A batched (1 call, {n_questions} prompts x n={N_CANDIDATES}):    "
        f"median {med['A']:.2f}s  {tps['A']:.1f} tok/s"
    )
    print(
        f"  B one at a time ({n_questions * N_CANDIDATES} calls, n=1):        "
        f"median {med['B']:.2f}s  {tps['B']:.1f} tok/s"
    )
    print(f"  wrote {OUT}")
    print(f"speedup B/A (time) = {speedup:.2f}x  (target >= 4x: {'met' if speedup >= 4.0 else 'NOT met'})")
    return report


if __name__ == "__main__":
    run(main, _TMP)
