"""The teacher's key goes only to endpoints the operator chose: $IRSFLOW_TEACHER_BASE_URL (DeepSeek's
by default) or hosts in $IRSFLOW_TEACHER_ALLOWED_HOSTS. A request naming any other host is refused
before anything runs, and the client refuses again before sending the key, whatever built its settings.
The would-be receiver is a real HTTP listener on 127.0.0.1 that records every header reaching it.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/teacher/test_teacher_endpoint.py -x
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from irsflow.config import parse_request
from irsflow.errors import ConfigError
from irsflow.teacher import TeacherConfig, TeacherSettings, judge_items
from tests.support.listener import Listener
from tests.support.local import ROOT

KEY = "sk-operator-SECRET-5d1f0e9a"
ITEMS = [{"id": "q1", "prompt": "Fever for 3 days?", "answer": "See a doctor."}]
TEACHER_WEIGHTS = {"irs_config": {"dw_config": {"initial_weights": {"rel": 1.0, "teacher": 1.0}}}}


@pytest.fixture()
def ear(monkeypatch, data_dir):
    """The listener, with the operator's key in the environment and no extra hosts allowed."""
    monkeypatch.delenv("IRSFLOW_TEACHER_ALLOWED_HOSTS", raising=False)
    monkeypatch.delenv("IRSFLOW_TEACHER_BASE_URL", raising=False)
    monkeypatch.delenv("IRSFLOW_TEACHER_API_KEY", raising=False)
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    with Listener() as listener:
        yield listener


def test_a_request_naming_another_host_is_refused(ear):
    with pytest.raises(ConfigError) as err:
        parse_request({**TEACHER_WEIGHTS, "teacher": {"base_url": ear.base_url}})
    msg = str(err.value)
    assert f"teacher.base_url: {ear.base_url!r} is not an endpoint the operator allows" in msg, msg
    assert "IRSFLOW_TEACHER_ALLOWED_HOSTS" in msg and KEY not in msg
    with pytest.raises(ValueError, match="not an endpoint the operator allows"):
        TeacherConfig(base_url=ear.base_url).with_key()
    assert ear.seen == []


def test_settings_built_without_validation_still_send_no_key(ear, tmp_path):
    # model_copy skips validation: the client's own check is what stops the key here
    s = TeacherSettings(cache_path=tmp_path / "c.sqlite").model_copy(update={"base_url": ear.base_url})
    with pytest.raises(ConfigError, match="teacher.base_url: .* not an endpoint the operator allows"):
        judge_items(ITEMS, s)
    assert ear.seen == [] and ear.credentials() == []


def test_the_cli_sends_no_key_to_a_requested_host(ear, tmp_path, data_dir):
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {
                **TEACHER_WEIGHTS,
                "teacher": {"base_url": ear.base_url},
                "n_questions": 2,
                "irs_config": {
                    "n_iterations": 1,
                    "n_candidates": 2,
                    "max_new_tokens": 8,
                    "dw_config": {"initial_weights": {"teacher": 1.0}},
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "IRSFLOW_TEACHER_ALLOWED_HOSTS"}
    r = subprocess.run(
        [sys.executable, "-m", "cli", "train", "--request", str(req)],
        cwd=ROOT,
        timeout=300,
        env={**env, "IRSFLOW_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "teacher.base_url" in r.stderr, (r.stdout[-2000:], r.stderr[-2000:])
    assert ear.seen == [] and KEY not in r.stdout + r.stderr


def test_hosts_the_operator_allows(ear, tmp_path, monkeypatch):
    # the listener does receive the key once the operator allows its host: the checks above test something
    monkeypatch.setenv("IRSFLOW_TEACHER_ALLOWED_HOSTS", "127.0.0.1")
    s = TeacherSettings(base_url=ear.base_url, cache_path=tmp_path / "c.sqlite", max_retries=0)
    with pytest.raises(ConfigError, match="refused it"):
        judge_items(ITEMS, s)
    assert ear.credentials() == [f"Bearer {KEY}"]

    monkeypatch.setenv("IRSFLOW_TEACHER_ALLOWED_HOSTS", f"127.0.0.1:{ear.port + 1}, api.example.com")
    for url in (
        ear.base_url,  # another port than the one allowed
        "http://api.example.com/v1",  # the key in clear text over the network
        "https://user:pw@api.example.com/v1",  # user info
        "https://api.example.com.evil.net/v1",
        "https://evil.net/api.example.com",
        "file:///etc/passwd",
    ):
        with pytest.raises(ValueError, match="not an endpoint the operator allows"):
            TeacherConfig(base_url=url)
    assert TeacherConfig(base_url="https://API.example.com:443/v1").base_url == "https://API.example.com:443/v1"
    assert TeacherConfig(base_url=f"http://127.0.0.1:{ear.port + 1}/v1")  # loopback may be plain http


def test_the_operators_endpoint_is_the_default(ear, monkeypatch):
    assert TeacherConfig().endpoint() == "https://api.deepseek.com"
    assert TeacherConfig(base_url="https://api.deepseek.com/").base_url == "https://api.deepseek.com/"
    monkeypatch.setenv("IRSFLOW_TEACHER_BASE_URL", ear.base_url)
    req = parse_request({**TEACHER_WEIGHTS, "teacher": {"model": "deepseek-v4-flash"}})
    # the request stores no endpoint: the worker that runs it uses its own operator's
    assert req.teacher.base_url is None and req.model_dump(mode="json")["teacher"]["base_url"] is None
    assert req.teacher.endpoint() == ear.base_url
    assert parse_request({**TEACHER_WEIGHTS, "teacher": {"base_url": ear.base_url}}).teacher.endpoint() == ear.base_url
    with pytest.raises(ConfigError, match="teacher.base_url"):
        parse_request({**TEACHER_WEIGHTS, "teacher": {"base_url": "https://api.deepseek.com"}})
