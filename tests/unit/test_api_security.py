"""The job API against a token holder who attacks it: `python -m deployments.api` on a free
127.0.0.1 port (no Prefect server: every request here is refused before one is needed).

A request cannot send the teacher's key to its own host, name files outside the allowed roots, learn
what exists there, freeze the API with a FIFO, ask for unbounded or infinite numbers, or send an
oversized body; the API does not start with a guessable token.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_api_security.py -x
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import httpx
import pytest

from deployments.api import MIN_TOKEN_LENGTH, auth_token
from irsflow.errors import InputError
from tests.support.listener import Listener
from tests.support.local import ROOT, free_port, stop_group

TOKEN = "api-security-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = "sk-operator-SECRET-a61c03"
TEACHER_WEIGHTS = {"irs_config": {"dw_config": {"initial_weights": {"rel": 1.0, "teacher": 1.0}}}}
# the operator's environment of these tests: no extra roots, no extra teacher hosts, no Prefect
DROPPED = (
    "PREFECT_API_URL",
    "IRSFLOW_ALLOWED_ROOTS",
    "IRSFLOW_WRITABLE_ROOTS",
    "IRSFLOW_TEACHER_ALLOWED_HOSTS",
    "IRSFLOW_TEACHER_BASE_URL",
    "IRSFLOW_API_TOKEN",
    "IRSFLOW_API_MAX_BODY_BYTES",
)


def _stop(proc: subprocess.Popen) -> None:
    stop_group(proc, 15)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-security")
    data = root / "data"
    data.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update(IRSFLOW_API_TOKEN=TOKEN, IRSFLOW_DATA_DIR=str(data), DEEPSEEK_API_KEY=KEY)
    log = root / "api.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.api", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(f"{base}/api/health", timeout=5)  # the first call also imports Prefect's settings
            break
        except httpx.HTTPError:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
    try:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
            yield SimpleNamespace(client=client, data=data, root=root, log=log)
    finally:
        _stop(proc)


def problems(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, (r.status_code, r.text)
    return {p["field"]: p["message"] for p in r.json()["detail"]}


def test_a_fifo_neither_blocks_validation_nor_stalls_health(api):
    fifo = api.data / "rules.fifo"
    os.mkfifo(fifo)
    posted: dict = {}

    def post():
        try:
            posted["r"] = api.client.post("/api/train", json={"scoring": {"rules": str(fifo)}})
        except httpx.HTTPError as err:
            posted["error"] = err

    t = threading.Thread(target=post, daemon=True)
    try:
        t.start()
        time.sleep(0.5)  # the POST is being validated (or, refused at once, is already answered)
        t0 = time.monotonic()
        h = httpx.get(f"{api.client.base_url}/api/health", timeout=1)  # no token needed
        assert h.status_code in (200, 503) and time.monotonic() - t0 < 1, h.text
        t.join(5)
        assert "r" in posted, posted
        assert "is a FIFO (named pipe), not a rules file" in problems(posted["r"])["scoring.rules"]
    finally:
        try:  # a reader blocked on the FIFO gets end-of-file and lets go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        t.join(10)


def test_paths_outside_the_roots_reveal_nothing(api):
    seen = {}
    for path in ("/etc/shadow", "/root/.ssh/id_rsa", "/etc/no-such-file", "/etc"):
        for field, body in (
            ("dataset", {"dataset": path}),
            ("scoring.rules", {"scoring": {"rules": path}}),
            ("init_adapter", {"init_adapter": path}),
        ):
            msg = problems(api.client.post("/api/train", json=body))[field]
            assert msg.startswith(f"{path!r} is outside the allowed roots ({api.data}"), msg
            seen.setdefault(field, set()).add(msg.replace(repr(path), "<path>"))
    assert all(len(v) == 1 for v in seen.values()), seen  # the same words whether it exists, is JSON, or not
    t0 = time.monotonic()
    assert (
        "outside the allowed roots"
        in problems(api.client.post("/api/train", json={"scoring": {"rules": "/dev/zero"}}))["scoring.rules"]
    )
    assert time.monotonic() - t0 < 2  # refused, not read


def test_the_teacher_cache_cannot_be_written_outside(api):
    target = api.root / "elsewhere" / "c.sqlite"
    r = api.client.post("/api/train", json={**TEACHER_WEIGHTS, "teacher": {"cache_path": str(target)}})
    assert "outside the writable roots" in problems(r)["teacher.cache_path"]
    assert not target.parent.exists()


def test_the_teachers_key_never_reaches_a_host_the_request_names(api):
    with Listener() as ear:
        r = api.client.post("/api/train", json={**TEACHER_WEIGHTS, "teacher": {"base_url": ear.base_url}})
        assert "not an endpoint the operator allows" in problems(r)["teacher.base_url"]
        time.sleep(0.5)
    assert ear.seen == [] and ear.credentials() == []
    assert KEY not in r.text and KEY not in api.log.read_text()


@pytest.mark.parametrize(
    "raw, field, message",
    [
        ('{"irs_config": {"n_iterations": 1000000000}}', "irs_config.n_iterations", "must be <= 1000"),
        ('{"irs_config": {"n_candidates": 1000000000}}', "irs_config.n_candidates", "must be <= 256"),
        ('{"irs_config": {"gen_batch_size": 1000000000}}', "irs_config.gen_batch_size", "must be <= 4096"),
        ('{"irs_config": {"lora": {"r": 1000000}}}', "irs_config.lora.r", "must be <= 1024"),
        ('{"irs_config": {"sft_epochs": Infinity}}', "irs_config.sft_epochs", "finite number"),
        (
            '{"irs_config": {"dw_config": {"initial_weights": {"rel": Infinity}}}}',
            "irs_config.dw_config.initial_weights.rel",
            "finite number",
        ),
        ('{"irs_config": {"learning_rate": NaN}}', "irs_config.learning_rate", "finite number"),
        ('{"seed": 18446744073709551616}', "seed", "must be <= 4294967295"),
    ],
)
def test_numbers_are_bounded_and_finite(api, raw, field, message):
    r = api.client.post("/api/train", content=raw.encode(), headers={"Content-Type": "application/json"})
    assert message in problems(r)[field]


def test_a_body_over_the_limit_is_413(api):
    big = b'{"system_prompt": "' + b"a" * (2 * 2**20) + b'"}'
    r = api.client.post("/api/train", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit of 1048576 bytes" in r.json()["detail"], r.text

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"system_prompt": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    r = api.client.post("/api/train", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert api.client.get("/api/train/status/nope").status_code == 404  # still serving


def test_a_deeply_nested_body_is_422_not_a_crash(api):
    r = api.client.post(
        "/api/train", content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert problems(r)["<body>"].startswith("not valid JSON")


@pytest.mark.parametrize("token", ["x", " ", " " * 40, "fifteen-chars-x", "a-long-token-with a-space"])
def test_a_weak_token_is_refused(token):
    with pytest.raises(InputError, match=f"at least {MIN_TOKEN_LENGTH} characters and no whitespace") as err:
        auth_token(token=token)
    assert len(token) < 8 or token not in str(err.value)  # the value is not echoed


def test_the_api_does_not_start_with_a_weak_token():
    assert auth_token(token="sixteen-chars-ok") == "sixteen-chars-ok"
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    r = subprocess.run(
        [sys.executable, "-m", "cli", "api", "--port", port],
        cwd=ROOT,
        timeout=60,
        env={**env, "IRSFLOW_API_TOKEN": "x"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "IRSFLOW_API_TOKEN is too weak" in r.stderr, (r.stdout, r.stderr)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
