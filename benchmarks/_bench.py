"""Setup shared by the benchmark scripts: an isolated temp data/Prefect home, and torch threads.

Imported first by each script (``from _bench import ...``), before anything reads the
environment; scripts run as ``python benchmarks/<name>.py`` so this folder is on ``sys.path``."""

from __future__ import annotations

import os
import tempfile


def isolate(name: str) -> str:
    """Point IRSFLOW_DATA_DIR and PREFECT_HOME at a fresh temp folder; returns it."""
    tmp = tempfile.mkdtemp(prefix=f"irsflow-bench-{name}-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["IRSFLOW_DATA_DIR"] = os.path.join(tmp, "data")
    os.environ["PREFECT_HOME"] = os.path.join(tmp, "prefect")
    os.environ["IRSFLOW_ALLOWED_ROOTS"] = tmp  # requests may name files anywhere in the benchmark's folder
    return tmp


def add_threads_arg(ap) -> None:
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1, see the module docstring; 0: torch's default)",
    )


def set_threads(n: int) -> int:
    """``n`` torch intra-op threads (0: leave torch's default); returns the count in use."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def run(main, tmp: str) -> None:
    """Run a benchmark's ``main`` and remove its temp folder however it ends."""
    import shutil

    try:
        main()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
