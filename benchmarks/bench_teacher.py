"""Teacher-client throughput: 1,000 items against tests/support/fake_openai.py answering after 200 ms.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_teacher.py [--items 1000] [--delay 0.2] [--concurrency 16]

Ideal throughput is concurrency / delay (16 / 0.2 = 80 items/s); the target is >= 0.8 of that.
Then the same items are judged again: every one is a cache hit, so the rerun makes zero calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from irsflow.teacher import TeacherSettings, judge_items  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def served_count(base_url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats") as r:
        return json.load(r)["count"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    # The server runs in its own process, as a real endpoint would: its threads must not share
    # the client's GIL.
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "fake_openai.py"), "sk-bench", str(a.delay)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        base_url = server.stdout.readline().strip()
        run(a, base_url)
    finally:
        server.terminate()
        server.wait(timeout=10)


def run(a, base_url: str) -> None:
    items = [{"id": f"q{i}", "prompt": f"Question {i}?", "answer": f"Answer {i}"} for i in range(a.items)]
    with tempfile.TemporaryDirectory() as tmp:
        # the operator's allowances for this benchmark: the fake endpoint on loopback, a cache in tmp
        os.environ.update(IRSFLOW_TEACHER_ALLOWED_HOSTS="127.0.0.1", IRSFLOW_ALLOWED_ROOTS=tmp)
        s = TeacherSettings(
            base_url=base_url, api_key="sk-bench", concurrency=a.concurrency, cache_path=Path(tmp) / "cache.sqlite"
        )
        t0 = time.perf_counter()
        out = judge_items(items, s)
        first = time.perf_counter() - t0
        ok = sum(j.status == "ok" for j in out)
        calls = served_count(base_url)
        t0 = time.perf_counter()
        again = judge_items(items, s)
        rerun = time.perf_counter() - t0
    ideal = a.concurrency / max(a.delay, 1e-9)
    rate = a.items / first
    print(
        f"first run: {a.items} items, {ok} ok, {calls} calls in {first:.2f} s = {rate:.1f} items/s "
        f"({rate / ideal:.2f} of ideal {ideal:.0f}/s; target >= 0.80)"
    )
    print(f"rerun: {sum(j.cached for j in again)} cache hits, {served_count(base_url) - calls} calls in {rerun:.2f} s")


if __name__ == "__main__":
    main()
