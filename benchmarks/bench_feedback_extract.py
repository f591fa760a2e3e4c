"""Feedback ETL throughput and memory (extract alone, and the whole run with mode "etl"): N synthetic
chat traces, each with a thumb, served by tests/support/fake_langfuse.py in a child process (so the
server's copy of the data is not in our memory figures), extracted through
``irsflow.feedback.langfuse.Extraction`` over HTTP on 127.0.0.1.

For each size (2,000 and 10,000 by default) and each trace-fetch mode:
    traces/s   records handed out per second of wall time, tracemalloc off (best of --repeats)
    peak MiB   peak Python memory during one more run under tracemalloc (started after imports)
and the ratio of the peaks, largest size over smallest: memory must not grow with the number of
traces (target: ratio <= 1.2). Extract modes serialise each record with ``json.dumps``, as a
writer would, and drop it; mode ``etl`` runs ``run_etl`` (transform + every output file + manifest).
Figures also go to ``benchmarks/out/bench_feedback_extract.json``.

    .venv/bin/python benchmarks/bench_feedback_extract.py                     # about 1.5 minutes
    .venv/bin/python benchmarks/bench_feedback_extract.py --modes auto,get --sizes 2000,10000
    .venv/bin/python benchmarks/bench_feedback_extract.py --api v4    # Langfuse v4 routes (legacy ones 410)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from _bench import isolate, run

TMP = isolate("feedback-extract")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "bench_feedback_extract.json"


def serve(n: int, api: str) -> tuple[subprocess.Popen, list[str]]:
    """The fake Langfuse with ``n`` traces in a child process; returns it and (url, public, secret).
    ``api`` v4: its legacy routes answer 410, as Langfuse Cloud's for a new organisation."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "fake_langfuse.py"),
            "--traces",
            str(n),
            "--legacy",
            "gone" if api == "v4" else "ok",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().split()
    if len(line) != 3:
        proc.kill()
        raise RuntimeError(f"fake Langfuse did not start (exit {proc.poll()})")
    return proc, line


def _extract(settings) -> tuple[int, int, str, dict]:
    from irsflow.feedback.langfuse import Extraction

    n = size = 0
    with Extraction(settings) as ext:
        for record in ext:
            size += len(json.dumps(record, ensure_ascii=False))
            n += 1
    return n, size, f"{ext.api}:{ext.mode}", dict(ext.stats)


def etl(settings) -> tuple[int, int, str, dict]:
    """The whole ETL run (extract, transform, write the run's files, manifest, watermark) into a
    fresh data dir each time, so every repeat sees all the feedback as new."""
    import os
    import tempfile

    from irsflow.feedback.etl import FeedbackSettings, run_etl

    os.environ["IRSFLOW_DATA_DIR"] = tempfile.mkdtemp(dir=TMP)
    m = run_etl(
        FeedbackSettings(langfuse={"host": settings.host, "api_version": settings.api_version}),
        "bench",
        keys=(settings.public_key.get_secret_value(), settings.secret_key.get_secret_value()),
    )
    size = sum((Path(os.environ["IRSFLOW_DATA_DIR"]) / "feedback" / "bench" / f).stat().st_size for f in m["files"])
    return m["counts"]["records"], size, "auto", m["extract"]


def measure(n: int, mode: str, repeats: int, api: str) -> dict:
    from irsflow.feedback.langfuse import LangfuseSettings

    proc, (url, pk, sk) = serve(n, api)
    extract = etl if mode == "etl" else _extract  # noqa: F811  (the stage measured)
    try:
        settings = LangfuseSettings(
            host=url, public_key=pk, secret_key=sk, api_version=api, trace_fetch="auto" if mode == "etl" else mode
        )
        extract(settings)  # warm: first connection, server-side sort caches
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            records, size, used, stats = extract(settings)
            times.append(time.perf_counter() - t)
        tracemalloc.start()
        extract(settings)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert records == n, f"{records} records for {n} traces"
    best = min(times)
    return {
        "traces": n,
        "mode": mode,
        "used": used,
        "records": records,
        "seconds": round(best, 3),
        "traces_per_s": round(n / best),
        "requests": stats["requests"],
        "json_mb": round(size / 2**20, 1),
        "peak_mib": round(peak / 2**20, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument(
        "--modes",
        default="auto,get,etl",
        help="extract with trace_fetch auto (lists traces here), list or get; etl: the whole ETL run",
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--api", default="v3", choices=["v3", "v4"], help="the Langfuse read API generation")
    args = ap.parse_args()
    import langfuse.api  # noqa: F401  (import cost, ~1 s, outside every timing)  # noqa: F401

    sizes = [int(x) for x in args.sizes.split(",")]
    rows = [measure(n, mode, args.repeats, args.api) for mode in args.modes.split(",") for n in sizes]
    print(
        f"{'traces':>7} {'mode':>12} {'records':>8} {'seconds':>8} {'traces/s':>9} {'requests':>9} "
        f"{'JSON MB':>8} {'peak MiB':>9}"
    )
    for r in rows:
        print(
            f"{r['traces']:>7} {r['mode'] + '->' + r['used']:>9} {r['records']:>8} {r['seconds']:>8.2f} "
            f"{r['traces_per_s']:>9} {r['requests']:>9} {r['json_mb']:>8} {r['peak_mib']:>9.2f}"
        )
    ratios = {}
    for mode in args.modes.split(","):
        peaks = {r["traces"]: r["peak_mib"] for r in rows if r["mode"] == mode}
        ratios[mode] = round(peaks[max(sizes)] / peaks[min(sizes)], 2)
        print(
            f"peak memory {max(sizes)} / {min(sizes)} traces ({mode}): {ratios[mode]:.2f}x "
            f"(traces x{max(sizes) / min(sizes):.0f})"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"api": args.api, "rows": rows, "peak_ratio": ratios}, indent=2) + "\n")
    print(f"  wrote {OUT}")


if __name__ == "__main__":
    run(main, TMP)
