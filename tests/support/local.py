"""Where the tests run: the checkout's root, the virtualenv's bin folder and a free port on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; bind to it soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, wait_s: float = 20) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``, so its own
    children included), then SIGKILL if it is still there after ``wait_s`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
