"""What the loop learns on questions it never trained on: every stage on the real SmolLM2-135M, the
same rounds and the same generated samples per round, several seeds, measured by the job's own
held-out evaluation.

Questions: ``benchmarks/data/doc_questions.jsonl``, real README text that installed packages ship
(``make_doc_questions.py``). The benchmark takes one question from each of ``--questions`` packages
(a fixed draw); each job holds out a third of them by package (``heldout``, split seed fixed, so every
stage and seed answers the same held-out questions, on topics no round trains on) and trains on the
rest. Each stage samples ``n_candidates`` (4) answers per training question per round (GRPO: 4
generations per prompt), rewards rel + faith + conc (the defaults). After every round the job answers
the held-out questions greedily; the benchmark compares the last round with the start model:

    gain        mean held-out reward (weighted rewards / sum of weights) minus the start model's,
                with a paired bootstrap 95% interval over the held-out questions
    win         share of held-out questions whose reward rose
    each reward's change   rel / faith / conc held-out means, last minus start: what the gain is made of
    d1, d2      distinct-1/2 of the held-out answers (d2: the start model's beside it)
    words       mean held-out answer length
    wall, cpu   seconds of the job (cpu: this process, all threads)
    gain/cpu-h  gain per CPU-hour

and, per stage across seeds, whether it meets the target: the interval above zero in every seed with
distinct-2 at least 90% of the start model's.

Each job runs through the library's job loop in this process (``irsflow.jobs.rounds.run_job_local``:
the phases the Prefect tasks wrap, early stopping and the final adapter's choice as in a job), so
Prefect's overhead is not in the figures. The benchmark's requests set no ``early_stop``, so every
job runs all its rounds; "last" is the last round run. The reward is a proxy (similarity to the
question and contexts, concision), not a judgement of answer quality.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_learning.py              # 4 stages x 3 seeds
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_learning.py --quick      # IRS, one seed
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_learning.py --variants IRS IRS-skip IRS-top2 --rounds 4
    .venv/bin/python benchmarks/bench_learning.py --table run1.json run2.json   # merge saved runs, print tables
"""

from __future__ import annotations

from _bench import add_threads_arg, isolate, run, set_threads

_TMP = isolate("learning")

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / "doc_questions.jsonl"
OUT = HERE / "out" / "bench_learning.json"
# stage (or IRS selection variant) -> request overrides; every variant samples the same answers per round
VARIANTS = {
    "IRS": {"stage": "IRS"},
    "IRS-skip": {"stage": "IRS", "stage_config": {"skip_margin": 0.02}},
    "IRS-top2": {"stage": "IRS", "stage_config": {"keep_top": 2, "keep_threshold": 0.5}},
    "ONPOLICY": {"stage": "ONPOLICY", "stage_config": {"eval_each_round": False}},
    "DPO": {"stage": "DPO"},
    "GRPO": {"stage": "GRPO"},
}


def draw_questions(n: int, path: Path) -> Path:
    """One question from each of ``n`` packages (a fixed draw), written to ``path``."""
    from irsflow.store import read_jsonl

    rows = read_jsonl(QUESTIONS)
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["meta"]["topic"], r)
    topics = sorted(first)
    random.Random(0).shuffle(topics)
    picked = [first[t] for t in topics[:n]]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8")
    return path


def request(variant: str, seed: int, dataset: Path, args) -> dict:
    over = VARIANTS[variant]
    return {
        "model_id": "builtin:smollm2-135m-instruct",
        "dataset": str(dataset),
        "n_questions": args.questions,
        "top_k": 2,
        "seed": seed,
        "track": False,
        "stage": over["stage"],
        "stage_config": over.get("stage_config", {}),
        "irs_config": {
            "n_iterations": args.rounds,
            "n_candidates": 4,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": 4,
            "learning_rate": args.lr,
            "gen_batch_size": 16,
        },
        "heldout": {"share": 1 / 3, "min_questions": 6, "max_questions": 64, "seed": 0},
    }


def run_job(req_body: dict) -> dict:
    """One job as a job runs: every phase its stage lists, round by round, early stop and the final
    adapter's choice included (``irsflow.jobs.rounds``, in this process)."""
    from irsflow.evals.heldout import heldout_path
    from irsflow.jobs.job import create_job, job_request
    from irsflow.jobs.rounds import run_job_local

    store = create_job(req_body)
    req = job_request(store)
    t0, c0 = time.perf_counter(), time.process_time()
    job = run_job_local(
        store,
        req,
        on_round=lambda r, rows: print(f"    round {r.iteration}: {time.perf_counter() - t0:7.1f}s", flush=True),
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rounds = [json.loads(heldout_path(store, r).read_text()) for r in range(0, len(job.rounds) + 1)]
    return {"job_id": store.job_id, "wall_s": wall, "cpu_s": cpu, "rounds": rounds}


def paired(base: list[float], after: list[float], n_boot: int = 4000, seed: int = 0) -> dict:
    diffs = [a - b for a, b in zip(after, base)]
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(n_boot))
    return {
        "gain": statistics.fmean(diffs),
        "lo": means[int(0.025 * n_boot)],
        "hi": means[int(0.975 * n_boot) - 1],
        "win": sum(d > 0 for d in diffs) / len(diffs),
    }


def against_start(start: dict, round_: dict) -> dict:
    """One round's held-out answers against the start model's, question by question: the paired gain,
    win rate, distinct-1/2 (the library's ``diversity``, as the job's own HELDOUT rows) and length."""
    from irsflow.rewards.dialogue import diversity

    by_id = {a["id"]: a["reward"] for a in start["answers"]}
    div = diversity([a["answer"] for a in round_["answers"]])
    return {
        **paired([by_id[a["id"]] for a in round_["answers"]], [a["reward"] for a in round_["answers"]]),
        "d1": div["distinct_1"],
        "d2": div["distinct_2"],
        "words": round_["mean_words"],
    }


def summarize(job: dict) -> dict:
    """The last round against the start model, with every round's figures (``by_round``)."""
    from irsflow.rewards.dialogue import diversity

    base, last = job["rounds"][0], job["rounds"][-1]
    # every round against the start model: where a longer run would have stopped, or still rises
    by_round = [against_start(base, r) for r in job["rounds"][1:]]
    start = diversity([a["answer"] for a in base["answers"]])
    return {
        **by_round[-1],
        "base": base["reward"],
        "final": last["reward"],
        "curve": [r["reward"] for r in job["rounds"]],
        "base_d1": start["distinct_1"],
        "base_d2": start["distinct_2"],
        "base_words": base["mean_words"],
        "n_heldout": len(last["answers"]),
        # what the gain is made of: each reward's held-out mean, start -> last (a rise in one can hide a
        # fall in another)
        "parts": {k: [base["rewards"][k], last["rewards"].get(k)] for k in base["rewards"]},
        "by_round": [{k: r[k] for k in ("gain", "lo", "hi", "win", "d2", "words")} for r in by_round],
        "wall_s": job["wall_s"],
        "cpu_s": job["cpu_s"],
        "gain_per_cpu_h": by_round[-1]["gain"] / (job["cpu_s"] / 3600) if job["cpu_s"] else None,
    }


def table(results: dict[str, dict[int, dict]]) -> str:
    lines = [
        "| stage | seed | held-out reward (start -> last) | gain [95% CI] | win | each reward's change | d1 | d2 | "
        "words | wall s | CPU s | gain / CPU-h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, by_seed in results.items():
        for seed, s in by_seed.items():
            parts = " ".join(f"{k} {b - a:+.3f}" for k, (a, b) in s.get("parts", {}).items() if b is not None)
            lines.append(
                f"| {variant} | {seed} | {s['base']:.4f} -> {s['final']:.4f} | {s['gain']:+.4f} "
                f"[{s['lo']:+.4f}, {s['hi']:+.4f}] | {s['win']:.2f} | {parts} | {s['d1']:.3f} | {s['d2']:.3f} "
                f"(start {s['base_d2']:.3f}) | {s['words']:.1f} (start {s['base_words']:.1f}) | "
                f"{s['wall_s']:.0f} | {s['cpu_s']:.0f} | {s['gain_per_cpu_h']:+.3f} |"
            )
    return "\n".join(lines)


def rounds_table(results: dict[str, dict]) -> str:
    """Held-out gain over the start model after each round (95% interval), distinct-2 and words."""
    n = max((len(s.get("by_round", [])) for by_seed in results.values() for s in by_seed.values()), default=0)
    lines = ["| stage | seed | " + " | ".join(f"round {i}" for i in range(1, n + 1)) + " |", "|---|---|" + "---|" * n]
    for variant, by_seed in results.items():
        for seed, s in by_seed.items():
            cells = [
                f"{r['gain']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] d2 {r['d2']:.2f}, {r['words']:.0f} w"
                for r in s.get("by_round", [])
            ]
            lines.append(f"| {variant} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(results: dict[str, dict]) -> str:
    """Per stage across seeds: mean gain, the seeds whose interval is above zero, diversity kept, gain per CPU-hour.
    The target: the interval above zero in every seed with distinct-2 at least 90% of the start model's."""
    lines = [
        "| stage | seeds | mean gain | interval above zero | distinct-2 kept (least) | mean words | CPU s / job | "
        "gain / CPU-h | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, by_seed in results.items():
        runs = list(by_seed.values())
        above = sum(r["lo"] > 0 for r in runs)
        kept = min(r["d2"] / r["base_d2"] for r in runs)
        met = above == len(runs) and kept >= 0.9
        lines.append(
            f"| {variant} | {len(runs)} | {statistics.fmean(r['gain'] for r in runs):+.4f} | "
            f"{above} of {len(runs)} | {kept:.0%} | {statistics.fmean(r['words'] for r in runs):.1f} | "
            f"{statistics.fmean(r['cpu_s'] for r in runs):.0f} | "
            f"{statistics.fmean(r['gain_per_cpu_h'] for r in runs):+.3f} | {'met' if met else 'not met'} |"
        )
    return "\n".join(lines)


def merged(paths: list[Path]) -> dict[str, dict]:
    """The results of several saved runs (a run seed by seed, or extra variants), later files winning."""
    results: dict[str, dict] = {}
    for path in paths:
        for variant, by_seed in json.loads(path.read_text(encoding="utf-8"))["results"].items():
            results.setdefault(variant, {}).update({str(k): v for k, v in by_seed.items()})
    return {v: dict(sorted(by_seed.items())) for v, by_seed in results.items()}


def write_results(args, threads: int, wall_s: float, results: dict) -> dict:
    doc = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "threads": threads,
        "total_wall_s": wall_s,
        "results": results,
    }
    from irsflow.store import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, doc)
    return doc


def main(argv: list[str] | None = None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_threads_arg(ap)
    ap.set_defaults(threads=0)  # the whole machine: this benchmark's budget is wall time on it
    ap.add_argument("--quick", action="store_true", help="IRS, one seed (about 4 minutes)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["IRS", "ONPOLICY", "DPO", "GRPO"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--rounds", type=int, default=3)
    # 24 packages: 16 train / 8 held-out keeps 4 stages x 3 seeds under 2 hours on 2 cores
    ap.add_argument("--questions", type=int, default=24, help="packages drawn (a third held out)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--table",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="print the tables of saved runs (merged) and exit; runs nothing",
    )
    args = ap.parse_args(argv)
    if args.table:
        results = merged(args.table)
        print(table(results), rounds_table(results), verdict(results), sep="\n\n")
        return {"results": results}
    if args.quick:
        args.variants, args.seeds = ["IRS"], args.seeds[:1]
    threads = set_threads(args.threads)
    dataset = draw_questions(args.questions, Path(os.environ["IRSFLOW_DATA_DIR"]).parent / "questions.jsonl")
    results: dict[str, dict[int, dict]] = {}
    t0 = time.perf_counter()
    for seed in args.seeds:  # seed by seed: a partial run still has whole comparisons
        for variant in args.variants:
            print(f"{variant} seed {seed}", flush=True)
            results.setdefault(variant, {})[seed] = summarize(run_job(request(variant, seed, dataset, args)))
            s = results[variant][seed]
            print(
                f"  gain {s['gain']:+.4f} [{s['lo']:+.4f}, {s['hi']:+.4f}] win {s['win']:.2f} d2 {s['d2']:.3f} "
                f"(start {s['base_d2']:.3f}) words {s['words']:.1f} cpu {s['cpu_s']:.0f}s",
                flush=True,
            )
            doc = write_results(args, threads, time.perf_counter() - t0, results)  # after every job: hours of work kept
    print(table(results), rounds_table(results), verdict(results), sep="\n\n")
    print(f"total {doc['total_wall_s']:.0f}s wall; figures in {args.out}")
    return doc


if __name__ == "__main__":
    run(main, _TMP)
