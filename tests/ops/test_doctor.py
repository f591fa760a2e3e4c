"""`deployments.doctor` against the session's real Prefect server.

Slot holders are real processes (tests/support/helpers/hold_gpu_slot.py) killed with SIGKILL: doctor finds
the slot a killed holder leaves once its run is marked Crashed (what a process worker does), repair
frees it, and a second gpu task starts well inside the 60 s lease. Without repair Prefect's lease
expiry frees the slot by itself; repair then removes only a slot counted without a lease and leaves
the lease alone. A missing or inactive gpu limit is reported and recreated.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import pytest
from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate, WorkPoolUpdate
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Crashed

from deployments.doctor import LIMIT_NAME, check_pool, check_services, format_report, run_doctor
from tests.support.http_reply import LocalServer
from tests.support.local import ROOT


def _by_name(checks: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in checks}


def _slots() -> tuple[int, list[str]]:
    """(slots counted on tag:gpu, lease holders' task run ids)."""
    with get_client(sync_client=True) as c:
        return (
            c.read_global_concurrency_limit_by_name(LIMIT_NAME).active_slots,
            [str(h) for h in c.read_concurrency_limit_by_tag("gpu").active_slots],
        )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Holder:
    """A hold_gpu_slot process in its own process group."""

    def __init__(self, tmp, name: str, seconds: float):
        self.marker, self.log = tmp / f"{name}.json", tmp / f"{name}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.helpers.hold_gpu_slot", str(self.marker), str(seconds)],
                cwd=ROOT,
                env=os.environ.copy(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_marker(self, timeout: float) -> dict:
        """The marker the task writes once it holds the slot: {task_run_id, flow_run_id, root_flow_run_id, t}."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.marker.exists():
                return json.loads(self.marker.read_text())
            if self.proc.poll() is not None:
                pytest.fail(f"holder exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        pytest.fail(f"no marker after {timeout} s: {self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture()
def holders(tmp_path):
    started: list[Holder] = []

    def start(name: str, seconds: float) -> Holder:
        started.append(Holder(tmp_path, name, seconds))
        return started[-1]

    yield start
    for h in started:
        if h.proc.poll() is None:
            h.kill9()


@pytest.fixture()
def gpu_limit(prefect_server):
    """tag:gpu = 1 with no slot in use, before and after: other tests rely on that limit."""

    def clean():
        with get_client(sync_client=True) as c:
            c.create_concurrency_limit(tag="gpu", concurrency_limit=1)  # an upsert
            c.update_global_concurrency_limit(LIMIT_NAME, GlobalConcurrencyLimitUpdate(active=True))
            c.reset_concurrency_limit_by_tag("gpu")  # revokes leases; the count is fixed next
            c.update_global_concurrency_limit(LIMIT_NAME, GlobalConcurrencyLimitUpdate(active_slots=0))

    clean()
    yield
    clean()


def test_unreachable_api_is_reported_fast():
    url = f"http://127.0.0.1:{_closed_port()}/api"
    t0 = time.time()
    with temporary_settings({PREFECT_API_URL: url}):
        checks, code = run_doctor(repair=True)
    assert time.time() - t0 < 15
    assert code == 1 and checks[0]["name"] == "prefect-api" and not checks[0]["ok"]
    assert url in checks[0]["detail"] and "unreachable" in checks[0]["detail"]
    assert not any(c["name"].startswith(("gpu-", "work-pool")) for c in checks)  # skipped, nothing to ask
    assert "FAIL  prefect-api" in format_report(checks)


def test_services_are_probed_without_showing_secrets(monkeypatch):
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    with LocalServer(Answer) as server:
        port = server.port
        monkeypatch.setenv("IRSFLOW_VLLM_URL", f"http://bob:s3cret@127.0.0.1:{port}/v1?api_key=k3y")
        monkeypatch.setenv("LANGFUSE_HOST", f"http://127.0.0.1:{_closed_port()}")
        monkeypatch.setenv("IRSFLOW_MLFLOW_URI", "sqlite:///mlflow.db")
        monkeypatch.delenv("IRSFLOW_TEACHER_BASE_URL", raising=False)
        checks = _by_name(check_services(timeout=2))
    assert set(checks) == {"service:vllm", "service:langfuse", "service:mlflow"}
    assert checks["service:vllm"]["ok"] and "HTTP 404" in checks["service:vllm"]["detail"]
    assert not checks["service:langfuse"]["ok"] and "unreachable" in checks["service:langfuse"]["detail"]
    assert checks["service:mlflow"]["ok"] and "not an HTTP server" in checks["service:mlflow"]["detail"]
    shown = json.dumps(list(checks.values())) + format_report(list(checks.values()))
    assert "s3cret" not in shown and "k3y" not in shown and f"bob:***@127.0.0.1:{port}/v1" in shown


def test_work_pools_need_the_right_shape_and_an_online_worker(stack):
    deadline = time.time() + 60  # the stack's workers register with their first heartbeat
    while not all((checks := _by_name(run_doctor()[0]))[f"work-pool:{p}"]["ok"] for p in ("gpu", "cpu")):
        assert time.time() < deadline, checks
        time.sleep(1)
    assert "irsflow-gpu-" in checks["work-pool:gpu"]["detail"]
    with get_client(sync_client=True) as c:
        missing = check_pool(c, "no-such-pool", 1)
        assert not missing["ok"] and "missing" in missing["detail"] and not missing["repairable"]
        c.update_work_pool("gpu", WorkPoolUpdate(concurrency_limit=2))
        try:
            mid = _by_name(run_doctor(repair=True)[0])  # report only: repair must not touch pools
            assert "concurrency limit 2, expected 1" in mid["work-pool:gpu"]["detail"]
            assert c.read_work_pool("gpu").concurrency_limit == 2
        finally:
            c.update_work_pool("gpu", WorkPoolUpdate(concurrency_limit=1))


def test_missing_or_inactive_gpu_limit_is_recreated(gpu_limit, monkeypatch):
    monkeypatch.setenv("IRSFLOW_GPU_SLOTS", "2")  # proves the value comes from the env (fixture restores 1)
    with get_client(sync_client=True) as c:
        c.delete_concurrency_limit_by_tag("gpu")
        checks, code = run_doctor()
        lim = _by_name(checks)["gpu-limit"]
        assert code == 1 and not lim["ok"] and lim["repairable"] and "missing" in lim["detail"]
        checks, _ = run_doctor(repair=True)
        lim = _by_name(checks)["gpu-limit"]
        assert lim["ok"] and lim["detail"].startswith("repaired: created tag:gpu = 2")
        assert c.read_concurrency_limit_by_tag("gpu").concurrency_limit == 2
        assert _by_name(checks)["gpu-slots"]["ok"]

        c.update_global_concurrency_limit(LIMIT_NAME, GlobalConcurrencyLimitUpdate(active=False))
        assert not _by_name(run_doctor()[0])["gpu-limit"]["ok"]
        assert _by_name(run_doctor(repair=True)[0])["gpu-limit"]["ok"]
        assert c.read_global_concurrency_limit_by_name(LIMIT_NAME).active


def test_slot_of_a_killed_holder_is_found_and_freed(gpu_limit, holders):
    a = holders("a", 600)
    ma = a.wait_marker(90)
    # While the holder lives: reported as held, and repair leaves its lease alone.
    slots = _by_name(run_doctor(repair=True)[0])["gpu-slots"]
    assert slots["ok"] and f"held by task run {ma['task_run_id']}" in slots["detail"], slots
    assert _slots() == (1, [ma["task_run_id"]])

    a.kill9()
    # A bare process's runs stay RUNNING after kill -9; a process worker would mark the run it
    # started (the top-level one) Crashed when it sees the exit code. Do what the worker does.
    with get_client(sync_client=True) as c:
        c.set_flow_run_state(ma["root_flow_run_id"], Crashed(message="process exited with -9"), force=True)
    checks, code = run_doctor()
    slots = _by_name(checks)["gpu-slots"]
    assert code == 1 and not slots["ok"] and slots["repairable"]
    assert f"LEAKED by task run {ma['task_run_id']}" in slots["detail"] and "CRASHED" in slots["detail"]

    t_repair = time.time()
    slots = _by_name(run_doctor(repair=True)[0])["gpu-slots"]
    assert slots["ok"] and "repaired: revoked the leases of 1 leaked holder" in slots["detail"], slots
    assert _slots() == (0, [])
    b = holders("b", 1)
    mb = b.wait_marker(60)
    # Left alone, the killed holder's 60 s lease would have kept the slot until ma["t"] + 60 at least.
    assert mb["t"] - ma["t"] < 50, mb["t"] - ma["t"]
    print(
        f"\nafter repair the next gpu task started in {mb['t'] - t_repair:.1f} s "
        f"({mb['t'] - ma['t']:.1f} s after the killed holder took the slot)"
    )
    assert b.proc.wait(60) == 0


def test_without_repair_the_lease_expires_and_repair_spares_it(gpu_limit, holders):
    a = holders("a", 600)
    ma = a.wait_marker(90)
    a.kill9()
    t_kill = time.time()
    b = holders("b", 1)  # waits (Pending) for the slot
    # A slot counted without a lease, as a server restart leaves it (leases live in server memory).
    with get_client(sync_client=True) as c:
        c.update_global_concurrency_limit(LIMIT_NAME, GlobalConcurrencyLimitUpdate(active_slots=2))
    slots = _by_name(run_doctor()[0])["gpu-slots"]
    assert not slots["ok"] and "LEAKED 1 counted without a lease" in slots["detail"], slots
    # The killed holder's run still says RUNNING: doctor cannot prove it dead and leaves its lease.
    assert f"held by task run {ma['task_run_id']}" in slots["detail"]
    slots = _by_name(run_doctor(repair=True)[0])["gpu-slots"]
    assert slots["ok"] and "released 1 slot(s) counted without a lease" in slots["detail"], slots
    assert _slots() == (1, [ma["task_run_id"]])

    mb = b.wait_marker(150)
    waited = mb["t"] - t_kill
    print(
        f"\nwithout repair the next gpu task started {waited:.1f} s after the kill "
        f"({mb['t'] - ma['t']:.1f} s after the killed holder took the slot)"
    )
    assert mb["t"] - ma["t"] >= 55  # the lease, no longer renewed, held the slot for its 60 s
    assert waited <= 120
    assert b.proc.wait(60) == 0
