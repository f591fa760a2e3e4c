"""Prefect's share of one IRS iteration (CPU).

One iteration = generate -> score -> sft on a fresh job (``create_job``, not timed) each repeat:

    A  through Prefect: ``flows.train.train_round(job_id, 1)``, the flow that
       ``irsflow train`` runs per iteration (a flow run + three task runs: generate and sft tagged
       ``gpu`` under the concurrency limit, score tagged ``cpu``), against the temporary local
       Prefect server that Prefect starts by itself (no PREFECT_API_URL).
    B  direct: ``run_generate``, ``run_score``, the IRS stage's ``train`` called in turn on a second job.

Prefect's share = (A - B) / A with the medians of 3 alternating repeats (A B A B A B).
Target: < 10%. Two less noise-prone figures come from inside the Prefect runs themselves (the
benchmark wraps the names the task modules call, and two private Prefect functions): "in-run"
overhead = A - (time inside the three phase functions), and the part of A spent in Prefect's
tag-concurrency slot calls (acquire + release around each tagged task run).

Two workloads:
  tiny  a random 2-layer Qwen2 chat model (``build_tiny_model``) with
        {"n_iterations": 1, "max_new_tokens": 32, "learning_rate": 1e-3, "max_seq_length": 2048},
        16 questions, other settings default (4 candidates, gen batch 8, top_k 3).
  demo  ``configs/demo.json`` (the real SmolLM2-135M-Instruct, 4 candidates, 48 new tokens, SFT
        batch 4, top_k 2) with n_iterations=1 and n_questions=8: "the demo" figure.

Start-up is kept out of the timings: a warm-up flow (``ensure_gpu_limit()`` inside a flow) starts
the temporary server and creates the ``gpu`` limit; then one untimed direct tiny iteration loads
the libraries, and before the demo the SmolLM2 weights are read once. Prefect's console logging is
left as configured (the irsflow logger is routed through Prefect as ``irsflow train`` does).
Figures also go to ``benchmarks/out/bench_prefect_overhead.json`` (``--only`` keeps the other
workload's figures from an earlier run).

Threads: torch runs with ``--threads`` intra-op threads, 1 by default. On a shared 2-core machine
two OpenMP threads stall whenever another process holds a core: each parallel matmul then waits
for a scheduler slice (measured here under load 5: a [16x576]@[576x1536] matmul took 17 ms with
2 threads and 0.4 ms with 1), which swamps the comparison. ``--threads 0`` keeps torch's default.

Run (from the repository root). Measured on 2 busy CPU cores: about 8 minutes in all, of which
about 2 for the server start-up, warm-up and tiny workload and 6 for the demo (one demo iteration
takes about 55 to 80 s); ``--only tiny`` or ``--only demo`` runs one workload:

    HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/python benchmarks/bench_prefect_overhead.py
"""

from __future__ import annotations

import os

from _bench import add_threads_arg, isolate, run, set_threads

_TMP = isolate("prefect")
os.environ.pop("PREFECT_API_URL", None)  # let Prefect start its temporary local server
os.environ.pop("PREFECT_PROFILES_PATH", None)
# B runs the phases outside any flow run: don't warn about irsflow log lines with no run to ship to.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # flows/ and tasks/ (also installed, but run from a checkout)
REPEATS = 3
TARGET_SHARE = 10.0
OUT = ROOT / "benchmarks" / "out" / "bench_prefect_overhead.json"

# Seconds spent inside the phase functions, and inside Prefect's tag-concurrency slot calls
# (acquire + release around each tagged task run), per call, wherever they are called from.
_PHASE_SECONDS: list[float] = []
_SLOT_SECONDS: list[float] = []


def _timed(fn, sink: list[float]):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    wrapper.__name__ = getattr(fn, "__name__", "wrapped")
    wrapper.__doc__ = fn.__doc__
    return wrapper


def instrument_slot_calls() -> bool:
    """Time Prefect's slot acquire/release calls (private API: skipped if it has moved)."""
    try:
        import prefect.concurrency._sync as cs
    except ImportError:
        return False
    names = ("acquire_concurrency_slots_with_lease", "release_concurrency_slots_with_lease")
    if not all(callable(getattr(cs, n, None)) for n in names):
        return False
    for n in names:
        setattr(cs, n, _timed(getattr(cs, n), _SLOT_SECONDS))
    return True


def tiny_request(model_dir: str) -> dict:
    return {
        "model_id": model_dir,
        "irs_config": {"n_iterations": 1, "max_new_tokens": 32, "learning_rate": 1e-3, "max_seq_length": 2048},
        "n_questions": 16,
    }


def demo_request() -> dict:
    data = json.loads((ROOT / "configs" / "demo.json").read_text())
    data.setdefault("irs_config", {})["n_iterations"] = 1
    data["n_questions"] = 8
    return data


def make_runners(request: dict, train_round, phases):
    """(via_prefect, direct): each runs one iteration on a fresh job and returns
    (seconds, seconds inside the phase functions, seconds in slot calls, avg_reward)."""
    from irsflow.config import parse_request
    from irsflow.jobs.job import create_job
    from irsflow.stages import IterationInputs
    from irsflow.store import no_progress

    req = parse_request(request)
    weights = dict(req.shared.dw_config.initial_weights)
    run_generate, run_score, train = phases

    def via_prefect():
        store = create_job(req)
        _PHASE_SECONDS.clear()
        _SLOT_SECONDS.clear()
        t0 = time.perf_counter()
        out = train_round(store.job_id, 1)
        dt = time.perf_counter() - t0
        assert out["train"]["steps"] > 0 and len(_PHASE_SECONDS) == 3, (out, _PHASE_SECONDS)
        return dt, sum(_PHASE_SECONDS), sum(_SLOT_SECONDS), out["score"]["avg_reward"]

    def direct():
        store = create_job(req)
        _PHASE_SECONDS.clear()
        _SLOT_SECONDS.clear()
        t0 = time.perf_counter()
        run_generate(store, req, 1, None)
        sc = run_score(store, req, 1, weights, [])
        ft = train(store, req, 1, IterationInputs(adapter=None, weights=weights), no_progress)
        dt = time.perf_counter() - t0
        assert ft["steps"] > 0 and len(_PHASE_SECONDS) == 3
        return dt, sum(_PHASE_SECONDS), sum(_SLOT_SECONDS), sc["avg_reward"]

    return req, via_prefect, direct


def measure(label: str, request: dict, train_round, phases) -> dict:
    req, via_prefect, direct = make_runners(request, train_round, phases)
    times = {"A": [], "B": []}
    inside = {"A": [], "B": []}
    slots = {"A": [], "B": []}
    for rep in range(1, REPEATS + 1):
        for name, fn in (("A", via_prefect), ("B", direct)):
            dt, phase_s, slot_s, avg = fn()
            times[name].append(dt)
            inside[name].append(phase_s)
            slots[name].append(slot_s)
            print(
                f"[{label}] repeat {rep}: {name} {dt:.2f}s (inside phases {phase_s:.2f}s, "
                f"tag-slot calls {slot_s:.2f}s, avg_reward {avg:.4f})",
                flush=True,
            )

    med = {k: statistics.median(v) for k, v in times.items()}
    share = 100.0 * (med["A"] - med["B"]) / med["A"]
    in_run = [a - p for a, p in zip(times["A"], inside["A"])]
    return {
        "request": req.model_dump(mode="json"),
        "seconds": times,
        "seconds_inside_phases": inside,
        "seconds_in_tag_slot_calls": slots["A"],
        "median_seconds": med,
        "prefect_seconds": med["A"] - med["B"],
        "prefect_share_percent": share,
        "in_run_overhead_seconds": in_run,
        "in_run_share_percent_median": statistics.median(100.0 * o / a for o, a in zip(in_run, times["A"])),
        "median_tag_slot_seconds": statistics.median(slots["A"]),
        "meets_target": share < TARGET_SHARE,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["tiny", "demo"], default=None, help="run one workload")
    add_threads_arg(ap)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    parts = [args.only] if args.only else ["tiny", "demo"]

    import prefect
    from prefect import flow
    from prefect.settings import PREFECT_API_URL

    import irsflow.jobs.rounds as rounds
    from flows.train import train_round
    from irsflow.models.tiny import build_tiny_model
    from irsflow.stages.irs import IRS
    from tasks.limits import ensure_gpu_limit

    # the job loop's phase table calls these by their names in irsflow.jobs.rounds; IRS.train: the stage's SFT
    for mod, name in ((rounds, "run_generate"), (rounds, "run_score"), (IRS, "train")):
        setattr(mod, name, _timed(getattr(mod, name), _PHASE_SECONDS))
    phases = (rounds.run_generate, rounds.run_score, IRS.train)
    slot_timing = instrument_slot_calls()

    @flow(name="bench-warmup")
    def warmup() -> int:
        return ensure_gpu_limit()

    print(f"warm-up flow (starts Prefect's temporary server; PREFECT_API_URL={PREFECT_API_URL.value()!r})", flush=True)
    t0 = time.perf_counter()
    gpu_limit = warmup()
    startup_s = time.perf_counter() - t0
    print(f"warm-up flow done in {startup_s:.1f}s, gpu limit {gpu_limit}", flush=True)

    # Untimed: one direct tiny iteration imports and initialises everything (TRL, PEFT, MiniLM).
    t0 = time.perf_counter()
    tiny_dir = str(build_tiny_model(Path(_TMP) / "tiny-model"))
    make_runners(tiny_request(tiny_dir), train_round, phases)[2]()
    warm_s = time.perf_counter() - t0
    print(f"warm-up direct tiny iteration done in {warm_s:.1f}s", flush=True)

    results: dict = {}
    t_all = time.perf_counter()
    if "tiny" in parts:
        results["tiny"] = measure("tiny", tiny_request(tiny_dir), train_round, phases)
    if "demo" in parts:
        from irsflow.models import load_model, load_tokenizer, resolve_model

        # Convert the GGUF if needed and read the weights once (page cache), outside any timing.
        demo_dir = resolve_model(demo_request().get("model_id", "builtin:smollm2-135m-instruct"))
        load_tokenizer(demo_dir), load_model(demo_dir)
        results["demo"] = measure("demo", demo_request(), train_round, phases)

    report = {
        "benchmark": "prefect_overhead",
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "platform": platform.platform()},
        "prefect_version": prefect.__version__,
        "server_startup_seconds": startup_s,
        "warmup_direct_tiny_iteration_seconds": warm_s,
        "tag_slot_calls_timed": slot_timing,
        "gpu_concurrency_limit": gpu_limit,
        "repeats": REPEATS,
        "target_share_percent": TARGET_SHARE,
        "measure_seconds": time.perf_counter() - t_all,
        **results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if args.only and OUT.exists():  # keep the other workload's figures from an earlier run
        old = json.loads(OUT.read_text())
        report = {**{k: v for k, v in old.items() if k in ("tiny", "demo")}, **report}
    OUT.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(
        f"Prefect overhead benchmark (Prefect {prefect.__version__}, temporary local server, started in "
        f"{startup_s:.1f}s before timing; {threads} torch thread(s))"
    )
    for label, r in results.items():
        m = r["median_seconds"]
        print(
            f"  {label}: A via Prefect median {m['A']:.2f}s, B direct median {m['B']:.2f}s, "
            f"Prefect {r['prefect_seconds']:+.2f}s = {r['prefect_share_percent']:.1f}%; "
            f"in-run (A minus time inside phases) {r['in_run_share_percent_median']:.1f}%"
        )
        if slot_timing:
            print(
                f"        of A, in Prefect's tag-concurrency slot calls (acquire+release, tags gpu/cpu): "
                f"median {r['median_tag_slot_seconds']:.2f}s"
            )
    print(f"  wrote {OUT}")
    line = ", ".join(
        f"{label}{' (the demo)' if label == 'demo' else ''} {r['prefect_share_percent']:.1f}% "
        f"({'met' if r['meets_target'] else 'NOT met'})"
        for label, r in results.items()
    )
    print(f"Prefect share (A-B)/A: {line}; target < {TARGET_SHARE:g}%")
    return report


if __name__ == "__main__":
    run(main, _TMP)
