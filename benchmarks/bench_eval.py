"""Eval throughput of the multiple-choice suite (batched vs one question at a time) on the tiny
model, and the cost of the gate's paired bootstrap for 1,000 paired items.

    A  batched: the 16 shipped MC questions (builtin:mc) in one ``generate_answers`` call, batch 16
    B  one at a time: the same call with batch_size=1
Both decode greedily, 16 new tokens, the model loaded inside each call (as the eval task does).
Also the log-likelihood mode (one forward pass per batch) and the K=4 sampled ensemble, batched vs
one at a time. All alternate, 3 repeats each; medians. Target: B / A >= 4x, on the answering time (the
model load and release, the same for both, are reported apart: fixed per suite, not per question).
Bootstrap: ``paired_bootstrap`` over 1,000 paired 0/1 items with 10,000 resamples, median of 5.
Target: under 1 s. Figures also go to ``benchmarks/out/bench_eval.json``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_eval.py
"""

from __future__ import annotations

from _bench import add_threads_arg, isolate, run, set_threads

_TMP = isolate("eval")

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "bench_eval.json"


def main(argv: list[str] | None = None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_threads_arg(ap)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)

    import numpy as np

    from irsflow.evals.answers import Group, answer_suites, generate_answers
    from irsflow.evals.gate import paired_bootstrap
    from irsflow.evals.mc import load_mc, score_mc
    from irsflow.models.tiny import build_tiny_model

    model = str(build_tiny_model(Path(os.environ["IRSFLOW_DATA_DIR"]) / "tiny", seed=0))
    items = load_mc("builtin:mc")
    prompts = [i.prompt() for i in items]
    generate_answers(model, None, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up
    from irsflow.settings import Sampling

    # K=1 greedy; K=4 sampled answers per question, majority vote (the ensemble mode):
    # batched = every question's K samples in one call, one at a time = one question, one sample per call
    letters = [list(i.letters) for i in items]
    modes = {
        "A": dict(batch_size=len(prompts)),
        "B": dict(batch_size=1),
        "AL": dict(batch_size=len(prompts), letters=letters),
        "BL": dict(batch_size=1, letters=letters),
        "A4": dict(batch_size=len(prompts), n=4, sampling=Sampling()),
        "B4": dict(batch_size=1, sampling=Sampling()),
    }
    times, acc, loads = {k: [] for k in modes}, {}, []
    for rep in range(args.repeats):
        for name, kw in modes.items():
            if name == "B4":  # K separate one-sample calls per question
                answers, secs = [[] for _ in prompts], 0.0
                for k in range(4):
                    out, stats = generate_answers(
                        model, None, prompts, max_new_tokens=args.max_new_tokens, seed=k, **kw
                    )
                    secs += stats["answer_s"]
                    for i, o in enumerate(out):
                        answers[i] += o
            elif "letters" in kw:  # log-likelihood mode: one forward pass per batch
                out, stats = answer_suites(
                    model, None, {"mc": Group(prompts, letters=kw["letters"])}, batch_size=kw["batch_size"]
                )
                answers, secs = out["mc"], stats["answer_s"]
            else:
                answers, stats = generate_answers(model, None, prompts, max_new_tokens=args.max_new_tokens, **kw)
                secs = stats["answer_s"]
                loads.append(stats["seconds"] - stats["answer_s"])
            times[name].append(secs)
            acc[name] = score_mc(items, answers)["accuracy"]
            print(f"  repeat {rep + 1}: {name} {secs:.3f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rng = np.random.default_rng(0)
    a, b = (rng.random(1000) < 0.6).astype(float), (rng.random(1000) < 0.65).astype(float)
    boot = []
    for _ in range(5):
        t0 = time.perf_counter()
        paired_bootstrap(a, b, n_boot=10_000)
        boot.append(time.perf_counter() - t0)
    result = {
        "questions": len(items),
        "max_new_tokens": args.max_new_tokens,
        "threads": threads,
        "batched_s": round(med["A"], 3),
        "one_at_a_time_s": round(med["B"], 3),
        "speedup": round(med["B"] / med["A"], 2),
        "k4_batched_s": round(med["A4"], 3),
        "k4_one_at_a_time_s": round(med["B4"], 3),
        "k4_speedup": round(med["B4"] / med["A4"], 2),
        "loglik_batched_s": round(med["AL"], 4),
        "loglik_one_at_a_time_s": round(med["BL"], 4),
        "loglik_speedup": round(med["BL"] / med["AL"], 2),
        "model_load_s": round(statistics.median(loads), 3),
        "accuracy_batched": acc["A"],
        "accuracy_single": acc["B"],
        "bootstrap_1000x10000_s": round(statistics.median(boot), 4),
    }
    print(
        f"MC suite, {len(items)} questions: batched {med['A']:.3f}s vs one at a time {med['B']:.3f}s = "
        f"{result['speedup']:.2f}x (target >= 4x); load + release {result['model_load_s']:.2f}s per suite run"
    )
    print(
        f"MC log-likelihood mode: batched {med['AL']:.4f}s vs one at a time {med['BL']:.4f}s = "
        f"{result['loglik_speedup']:.2f}x"
    )
    print(
        f"MC ensemble K=4 (sampled, majority vote): batched {med['A4']:.3f}s vs one sample at a time "
        f"{med['B4']:.3f}s = {result['k4_speedup']:.2f}x"
    )
    print(f"paired bootstrap, 1,000 items x 10,000 resamples: {result['bootstrap_1000x10000_s']:.3f}s (target < 1 s)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run(main, _TMP)
