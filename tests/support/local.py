"""Where the tests run: the checkout's root, the virtualenv's bin folder and a free port on 127.0.0.1."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; bind to it soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
