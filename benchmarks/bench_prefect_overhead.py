"""Prefect's share of one IRS iteration (CPU).

One iteration = generate -> score -> sft on a fresh job (``create_job``, not timed) each repeat:

    A  through Prefect: ``flows.irs.irs_iteration(job_id, 1, None, weights, [])``, the flow that
       ``irsflow train`` runs per iteration (a flow run + three task runs: generate and sft tagged
       ``gpu`` under the concurrency limit, score tagged ``cpu``), against the temporary local
       Prefect server that Prefect starts by itself (no PREFECT_API_URL).
    B  direct: ``run_generate``, ``run_score``, ``run_sft`` called in turn on a second job.

Prefect's share = (A - B) / A with the medians of 3 alternating repeats (A B A B A B).
Target: < 10%. As a second, less noise-prone estimate, the three phase functions are timed
inside the Prefect tasks too (the benchmark wraps the names the task modules call), giving
"in-run" overhead = A - (time inside the phase functions), whose median share is also reported.

Two workloads:
  tiny  a random 2-layer Qwen2 chat model (``build_tiny_model``) with
        {"n_iterations": 1, "max_new_tokens": 32, "learning_rate": 1e-3, "max_seq_length": 2048},
        16 questions, other settings default (4 candidates, gen batch 8, top_k 3).
  demo  ``configs/demo.json`` (the real SmolLM2-135M-Instruct, 4 candidates, 48 new tokens, SFT
        batch 4, top_k 2) with n_iterations=1 and n_questions=8: "the demo" figure.

Start-up is kept out of the timings: a warm-up flow (``ensure_gpu_limit()`` inside a flow) starts
the temporary server and creates the ``gpu`` limit; an untimed direct iteration per workload
loads the libraries and fills the page cache. Prefect's console logging is left as configured
(the irsflow logger is routed through Prefect as ``irsflow train`` does). Figures also go to
``benchmarks/out/bench_prefect_overhead.json``.

Threads: torch runs with ``--threads`` intra-op threads, 1 by default. On a shared 2-core machine
two OpenMP threads stall whenever another process holds a core: each parallel matmul then waits
for a scheduler slice (measured here under load 5: a [16x576]@[576x1536] matmul took 17 ms with
2 threads and 0.4 ms with 1), which swamps the comparison. ``--threads 0`` keeps torch's default.

Run (from the repository root; 3 to 4 minutes on 2 CPU cores, more on a busy machine; add
``--only tiny`` or ``--only demo`` to run one workload):

    HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/python benchmarks/bench_prefect_overhead.py
"""
from __future__ import annotations

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="irsflow-bench-prefect-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["IRSFLOW_DATA_DIR"] = os.path.join(_TMP, "data")
os.environ["PREFECT_HOME"] = os.path.join(_TMP, "prefect")
os.environ.pop("PREFECT_API_URL", None)  # let Prefect start its temporary local server
os.environ.pop("PREFECT_PROFILES_PATH", None)
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "irsflow")  # as `irsflow train` does
# B runs the phases outside any flow run: don't warn about irsflow log lines with no run to ship to.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # flows/ and tasks/ (also installed, but run from a checkout)
REPEATS = 3
TARGET_SHARE = 10.0
OUT = ROOT / "benchmarks" / "out" / "bench_prefect_overhead.json"

# Time spent inside the phase functions, per call, wherever they are called from.
_PHASE_SECONDS: list[float] = []


def _timed(fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _PHASE_SECONDS.append(time.perf_counter() - t0)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def tiny_request(model_dir: str) -> dict:
    return {"model_id": model_dir,
            "irs_config": {"n_iterations": 1, "max_new_tokens": 32, "learning_rate": 1e-3, "max_seq_length": 2048},
            "n_questions": 16}


def demo_request() -> dict:
    data = json.loads((ROOT / "configs" / "demo.json").read_text())
    data.setdefault("irs_config", {})["n_iterations"] = 1
    data["n_questions"] = 8
    return data


def measure(label: str, request: dict, irs_iteration, phases) -> dict:
    from irsflow.config import parse_request
    from irsflow.job import create_job

    req = parse_request(request)
    weights = dict(req.irs_config.dw_config.initial_weights)
    run_generate, run_score, run_sft = phases

    def via_prefect():
        store = create_job(req)
        _PHASE_SECONDS.clear()
        t0 = time.perf_counter()
        out = irs_iteration(store.job_id, 1, None, weights, [])
        dt = time.perf_counter() - t0
        assert out["sft"]["steps"] > 0 and len(_PHASE_SECONDS) == 3, (out, _PHASE_SECONDS)
        return dt, sum(_PHASE_SECONDS), out["score"]["avg_reward"]

    def direct():
        store = create_job(req)
        _PHASE_SECONDS.clear()
        t0 = time.perf_counter()
        run_generate(store, req, 1, None)
        sc = run_score(store, req, 1, weights, [])
        ft = run_sft(store, req, 1, None)
        dt = time.perf_counter() - t0
        assert ft["steps"] > 0 and len(_PHASE_SECONDS) == 3
        return dt, sum(_PHASE_SECONDS), sc["avg_reward"]

    print(f"[{label}] warm-up: one direct iteration (not timed)", flush=True)
    t0 = time.perf_counter()
    direct()
    warm_s = time.perf_counter() - t0

    times = {"A": [], "B": []}
    inside = {"A": [], "B": []}
    for rep in range(1, REPEATS + 1):
        for name, fn in (("A", via_prefect), ("B", direct)):
            dt, phase_s, avg = fn()
            times[name].append(dt)
            inside[name].append(phase_s)
            print(f"[{label}] repeat {rep}: {name} {dt:.2f}s (phases {phase_s:.2f}s, avg_reward {avg:.4f})",
                  flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    share = 100.0 * (med["A"] - med["B"]) / med["A"]
    in_run = [100.0 * (a - p) / a for a, p in zip(times["A"], inside["A"])]
    return {
        "request": req.model_dump(mode="json"),
        "warmup_direct_seconds": warm_s,
        "seconds": times,
        "phase_seconds": inside,
        "median_seconds": med,
        "prefect_seconds": med["A"] - med["B"],
        "prefect_share_percent": share,
        "in_run_overhead_seconds": [a - p for a, p in zip(times["A"], inside["A"])],
        "in_run_share_percent_median": statistics.median(in_run),
        "meets_target": share < TARGET_SHARE,
    }


def set_threads(n: int) -> int:
    """``n`` torch intra-op threads (0: leave torch's default); returns the count in use."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["tiny", "demo"], default=None, help="run one workload")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1, see the module docstring; 0: torch's default)")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    parts = [args.only] if args.only else ["tiny", "demo"]

    import prefect
    from prefect import flow
    from prefect.settings import PREFECT_API_URL

    import tasks.generate
    import tasks.score
    import tasks.sft
    from flows.irs import irs_iteration
    from irsflow.models.tiny import build_tiny_model
    from tasks.common import ensure_gpu_limit

    for mod, name in ((tasks.generate, "run_generate"), (tasks.score, "run_score"), (tasks.sft, "run_sft")):
        setattr(mod, name, _timed(getattr(mod, name)))
    phases = (tasks.generate.run_generate, tasks.score.run_score, tasks.sft.run_sft)

    @flow(name="bench-warmup")
    def warmup() -> int:
        return ensure_gpu_limit()

    print(f"warm-up flow (starts Prefect's temporary server; PREFECT_API_URL={PREFECT_API_URL.value()!r})",
          flush=True)
    t0 = time.perf_counter()
    gpu_limit = warmup()
    startup_s = time.perf_counter() - t0
    print(f"warm-up flow done in {startup_s:.1f}s, gpu limit {gpu_limit}", flush=True)

    results: dict = {}
    t_all = time.perf_counter()
    if "tiny" in parts:
        model_dir = build_tiny_model(Path(_TMP) / "tiny-model")
        results["tiny"] = measure("tiny", tiny_request(str(model_dir)), irs_iteration, phases)
    if "demo" in parts:
        from irsflow.models import resolve_model

        resolve_model("builtin:smollm2-135m-instruct")  # convert the GGUF once, outside any timing
        results["demo"] = measure("demo", demo_request(), irs_iteration, phases)

    report = {
        "benchmark": "prefect_overhead",
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "platform": platform.platform()},
        "prefect_version": prefect.__version__,
        "server_startup_seconds": startup_s,
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
    print(f"Prefect overhead benchmark (Prefect {prefect.__version__}, temporary local server, started in "
          f"{startup_s:.1f}s before timing; {threads} torch thread(s))")
    for label, r in results.items():
        m = r["median_seconds"]
        print(f"  {label}: A via Prefect median {m['A']:.2f}s, B direct median {m['B']:.2f}s, "
              f"Prefect {r['prefect_seconds']:+.2f}s = {r['prefect_share_percent']:.1f}%; "
              f"in-run (A minus time inside phases) {r['in_run_share_percent_median']:.1f}%")
    print(f"  wrote {OUT}")
    line = ", ".join(f"{label}{' (the demo)' if label == 'demo' else ''} {r['prefect_share_percent']:.1f}%"
                     for label, r in results.items())
    ok = all(r["meets_target"] for r in results.values())
    print(f"Prefect share (A-B)/A: {line}  (target < {TARGET_SHARE:g}%: {'met' if ok else 'NOT met'})")
    return report


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
