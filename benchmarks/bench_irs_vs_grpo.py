"""IRS vs GRPO for the same reward on the tiny model: reward curves against wall time and compute
(CPU seconds of this process, all threads).

Reward: ``conc`` (concision against the question's contexts; the random tiny model learns to stop
early). Questions: the first 8 demo questions with 2 contexts each. Both methods sample 4
answers per question per round from the current adapter and update a LoRA adapter:
    IRS   generate -> score -> SFT on the best answer (the library phases, no Prefect)
    GRPO  one epoch of TRL GRPOTrainer (num_generations 4, beta 0) with conc as reward function
After every round both adapters are evaluated the same way: mean conc over 4 sampled answers
per question (fixed seed). The script prints both curves (round, cumulative seconds, reward)
and the wall time each method needs to reach the gain IRS reaches in its last round. This is the
trade-off users choose by; it is one seed on a toy model, not a verdict.
Figures also go to ``benchmarks/out/bench_irs_vs_grpo.json``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_irs_vs_grpo.py [--rounds 4]
"""

from __future__ import annotations

from _bench import add_threads_arg, isolate, run, set_threads

_TMP = isolate("irs_vs_grpo")

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "bench_irs_vs_grpo.json"


def main(argv: list[str] | None = None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_threads_arg(ap)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    set_threads(args.threads)

    import numpy as np

    from irsflow.config import parse_request
    from irsflow.dataset import load_questions
    from irsflow.jobs.job import create_job
    from irsflow.jobs.resume import iteration_inputs
    from irsflow.loop.generate import generate_candidates
    from irsflow.loop.phases import run_generate, run_score
    from irsflow.models.tiny import build_tiny_model
    from irsflow.rewards import RewardBatch, RewardEnv, build_rewards
    from irsflow.rewards.settings import ScoringConfig
    from irsflow.settings import LoraSettings, Sampling
    from irsflow.stages.irs import IRS
    from irsflow.training.grpo import train_grpo

    model = str(build_tiny_model(Path(os.environ["IRSFLOW_DATA_DIR"]) / "tiny", seed=0))
    system = "Answer the question concisely using the context when it is relevant."
    questions = load_questions("builtin:demo", 8)
    scoring = ScoringConfig(backend="heuristic")
    conc = build_rewards(["conc"], RewardEnv(settings=scoring))
    lora = LoraSettings(r=16, alpha=32)

    def evaluate(adapter: str | None) -> float:
        rows, _ = generate_candidates(
            model,
            adapter,
            questions,
            n_candidates=4,
            max_new_tokens=32,
            sampling=Sampling(),
            seed=123,
            iteration=0,
            gen_batch_size=8,
            top_k=2,
            system_prompt=system,
        )
        flat = [(r, c["text"]) for r in rows for c in r["candidates"]]
        return float(
            np.mean(
                conc["conc"](
                    RewardBatch(
                        questions=[r["question"] for r, _ in flat],
                        answers=[t for _, t in flat],
                        contexts=[r["context"] for r, _ in flat],
                    )
                )
            )
        )

    base = evaluate(None)
    req = parse_request(
        {
            "model_id": model,
            "n_questions": 8,
            "top_k": 2,
            "seed": 1,
            "track": False,
            "system_prompt": system,
            "scoring": {"backend": "heuristic"},
            "irs_config": {
                "n_iterations": args.rounds,
                "n_candidates": 4,
                "max_new_tokens": 32,
                "learning_rate": 1e-2,
                "batch_size": 4,
                "sft_epochs": 2,
                "dw_config": {"initial_weights": {"conc": 1.0}},
            },
        }
    )
    store = create_job(req)
    irs, t, cpu = [{"round": 0, "seconds": 0.0, "cpu_seconds": 0.0, "reward": base}], 0.0, 0.0
    for it in range(1, args.rounds + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        inputs = iteration_inputs(store, req, it)
        run_generate(store, req, it, inputs.adapter)
        run_score(store, req, it, inputs.weights, inputs.history)
        adapter = IRS.run_training(store, req, it, inputs)["adapter"]
        t, cpu = t + time.perf_counter() - t0, cpu + time.process_time() - c0
        irs.append({"round": it, "seconds": round(t, 2), "cpu_seconds": round(cpu, 2), "reward": evaluate(adapter)})
        print(f"  IRS  round {it}: {t:6.1f}s ({cpu:6.1f} CPU s)  reward {irs[-1]['reward']:.4f}", flush=True)
    grpo, t, cpu, adapter = [{"round": 0, "seconds": 0.0, "cpu_seconds": 0.0, "reward": base}], 0.0, 0.0, None
    for r in range(1, args.rounds + 1):
        out = Path(os.environ["IRSFLOW_DATA_DIR"]) / f"grpo_{r}"
        t0, c0 = time.perf_counter(), time.process_time()
        train_grpo(
            model,
            adapter,
            questions,
            conc,
            {"conc": 1.0},
            out,
            system_prompt=system,
            top_k=2,
            num_generations=4,
            max_new_tokens=32,
            learning_rate=1e-2,
            batch_size=8,
            epochs=1,
            beta=0.0,
            lora=lora,
            seed=r,
            sampling=Sampling(),
        )
        t, cpu = t + time.perf_counter() - t0, cpu + time.process_time() - c0
        adapter = str(out)
        grpo.append({"round": r, "seconds": round(t, 2), "cpu_seconds": round(cpu, 2), "reward": evaluate(adapter)})
        print(f"  GRPO round {r}: {t:6.1f}s ({cpu:6.1f} CPU s)  reward {grpo[-1]['reward']:.4f}", flush=True)

    target = irs[-1]["reward"]

    def time_to(curve, key="seconds"):
        hit = next((p for p in curve[1:] if p["reward"] >= target), None)
        return hit[key] if hit else None

    result = {
        "base_reward": base,
        "irs": irs,
        "grpo": grpo,
        "irs_final_gain": target - base,
        "seconds_to_irs_final_level": {"irs": time_to(irs), "grpo": time_to(grpo)},
        "cpu_seconds_to_irs_final_level": {"irs": time_to(irs, "cpu_seconds"), "grpo": time_to(grpo, "cpu_seconds")},
    }
    print(
        f"base reward {base:.4f}; IRS after {args.rounds} rounds {irs[-1]['reward']:.4f} in {irs[-1]['seconds']:.1f}s; "
        f"GRPO after {args.rounds} rounds {grpo[-1]['reward']:.4f} in {grpo[-1]['seconds']:.1f}s"
    )
    print(f"wall time to reach IRS's final level: IRS {time_to(irs)}s, GRPO {time_to(grpo)}s (None: not reached)")
    irs_cpu, grpo_cpu = time_to(irs, "cpu_seconds"), time_to(grpo, "cpu_seconds")
    print(
        f"compute to reach it: IRS {irs_cpu} CPU s, GRPO {grpo_cpu} CPU s; "
        f"ratio GRPO/IRS {(grpo_cpu or float('nan')) / (irs_cpu or float('nan')):.2f}"
    )
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run(main, _TMP)
