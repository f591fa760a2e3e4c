"""Teacher client against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/fake_openai.py).

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_teacher_client.py -x
"""
from __future__ import annotations

import json
import logging

import pytest

from irsflow.errors import ConfigError, InputError
from irsflow.teacher import JudgementCache, TeacherSettings, judge_items, load_template, read_usage
from tests.fake_openai import FakeOpenAI

KEY = "sk-test-SECRET-7f3a9c1e55d0"


@pytest.fixture
def srv(monkeypatch):
    monkeypatch.delenv("IRSFLOW_TEACHER_API_KEY", raising=False)
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as server:
        yield server


def settings(srv, tmp_path, **kw) -> TeacherSettings:
    base = dict(base_url=srv.base_url, cache_path=tmp_path / "teacher" / "cache.sqlite", backoff_s=0.01,
                max_retries=2, max_tokens=64)
    return TeacherSettings(**{**base, **kw})


def items(n: int, tag: str = "") -> list[dict]:
    return [{"id": f"q{i}{tag}", "prompt": f"Question {i}{tag}: fever for 3 days?", "answer": f"Answer {i}",
             "context": "adult" if i % 2 else ""} for i in range(n)]


def test_valid_judgements_cached_and_exported(srv, tmp_path):
    s = settings(srv, tmp_path)
    out = judge_items(items(3), s)
    assert [j.id for j in out] == ["q0", "q1", "q2"]
    assert all(j.status == "ok" and j.teacher_score == 0.75 and j.safety_flag is False and not j.cached for j in out)
    req = srv.requests[0]
    assert req["model"] == "deepseek-flash" and req["response_format"] == {"type": "json_object"}
    assert req["temperature"] == 0 and "json" in req["messages"][1]["content"]
    sent = sorted(r["messages"][1]["content"] for r in srv.requests)  # arrival order is concurrent
    assert "QUESTION:\nQuestion 0: fever" in sent[0] and "ANSWER:\nAnswer 0" in sent[0]

    n = JudgementCache(s.resolved_cache_path()).export_jsonl(tmp_path / "teacher_judgements.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "teacher_judgements.jsonl").read_text().splitlines()]
    assert n == 3 and {r["id"] for r in rows} == {"q0", "q1", "q2"}
    assert {"teacher_score", "safety_flag", "comment", "best_answer", "model", "template_version"} <= set(rows[0])


def test_rerun_makes_zero_api_calls(srv, tmp_path):
    s = settings(srv, tmp_path)
    judge_items(items(5), s)
    assert srv.count == 5
    again = judge_items(items(5), s)
    assert srv.count == 5, "a rerun over the same items must not call the API"
    assert all(j.cached and j.status == "ok" for j in again)
    ledger = read_usage(s.resolved_cache_path().parent / "teacher_usage.csv")
    assert [(r["calls"], r["cache_hits"], r["ok"]) for r in ledger] == [("5", "0", "5"), ("0", "5", "5")]
    # a changed answer is a new key: exactly one new call
    changed = items(5)
    changed[2]["answer"] += " (edited)"
    judge_items(changed, s)
    assert srv.count == 6


def test_bad_replies_retried_then_failure_not_cached(srv, tmp_path):
    s = settings(srv, tmp_path, max_retries=2)
    srv.script([{"kind": "blank"}, {"kind": "invalid"}, {"kind": "schema"}])
    [j] = judge_items(items(1), s)
    assert j.status == "failed" and j.teacher_score is None and j.attempts == 3 and srv.count == 3
    assert "bad reply" in j.error
    # the failure was not cached: a rerun tries again and now succeeds
    [j] = judge_items(items(1), s)
    assert j.status == "ok" and not j.cached and srv.count == 4

    srv.script([{"kind": "blank"}])
    [j] = judge_items(items(1, tag="b"), s)
    assert j.status == "ok" and j.attempts == 2


def test_429_retry_after_is_honoured(srv, tmp_path):
    s = settings(srv, tmp_path, backoff_s=0.01)
    srv.script([{"kind": "status", "status": 429, "retry_after": "1"}])
    [j] = judge_items(items(1), s)
    assert j.status == "ok" and srv.count == 2 and srv.statuses[0] == 429
    assert srv.times[1] - srv.times[0] >= 0.95, "the retry came before Retry-After elapsed"


def test_500_retried_and_400_not(srv, tmp_path):
    s = settings(srv, tmp_path, max_retries=3)
    srv.script([{"kind": "status", "status": 500}, {"kind": "status", "status": 503}])
    [j] = judge_items(items(1), s)
    assert j.status == "ok" and j.attempts == 3 and srv.count == 3

    srv.script([{"kind": "status", "status": 400}])
    [j] = judge_items(items(1, tag="x"), s)
    assert j.status == "failed" and j.attempts == 1 and "400" in j.error and srv.count == 4


def test_timeout_retried(srv, tmp_path):
    s = settings(srv, tmp_path, timeout_s=0.3)
    srv.script([{"kind": "ok", "delay": 1.0, "score": 0.1}])  # answered too late: must not be used
    [j] = judge_items(items(1), s)
    assert j.status == "ok" and j.attempts == 2 and j.teacher_score == 0.75 and srv.count == 2


def test_budget_stops_at_cap_and_keeps_finished_work(srv, tmp_path):
    # 1000 USD per million tokens: a call costs ~0.3 USD, its bound ~1.2 USD, so 3 USD buys a few calls.
    prices = {"deepseek-flash": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}
    s = TeacherSettings.model_validate({**settings(srv, tmp_path).model_dump(), "api_key": KEY,
                                        "cache_path": tmp_path / "teacher" / "cache.sqlite",
                                        "prices": prices, "budget_usd": 3.0, "concurrency": 4})
    out = judge_items(items(20), s)
    ok = [j for j in out if j.status == "ok"]
    stopped = [j for j in out if j.status == "budget_stopped"]
    assert 0 < len(ok) < 20 and len(ok) + len(stopped) == 20 and srv.count == len(ok)
    [row] = read_usage(s.resolved_cache_path().parent / "teacher_usage.csv")
    assert float(row["cost_usd"]) <= 3.0 and row["budget_stopped"] == "True"
    assert int(row["calls"]) == len(ok) and int(row["budget_stopped_items"]) == len(stopped)
    # not stopped early by in-flight reservations: it spent until one more bound (~1.2 USD) no longer fit
    assert float(row["cost_usd"]) > 3.0 - 1.5 and int(row["tokens_in"]) > 0
    # finished work is kept: a rerun without a cap calls only for the stopped items
    calls_before = srv.count
    again = judge_items(items(20), s.model_copy(update={"budget_usd": None}))
    assert all(j.status == "ok" for j in again) and srv.count - calls_before == len(stopped)


def test_key_never_in_files_logs_or_errors(srv, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # openai/httpx2 debug logging included
    s = settings(srv, tmp_path, max_retries=1)
    srv.script([{"kind": "status", "status": 429, "retry_after": "0"}, {"kind": "invalid"}, {"kind": "invalid"}])
    judge_items(items(4), s, usage_path=tmp_path / "teacher_usage.csv")
    JudgementCache(s.resolved_cache_path()).export_jsonl(tmp_path / "teacher_judgements.jsonl")
    with pytest.raises(ConfigError) as bad:
        judge_items(items(1, tag="k"), s.model_copy(update={"api_key": type(s.api_key)(KEY + "-wrong")}))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 3
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in caplog.text and KEY not in str(bad.value) and KEY not in repr(s)


def test_config_and_input_errors(srv, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="prices: no price"):  # pydantic wraps it in a ValidationError
        TeacherSettings(model="other-model", budget_usd=1.0)
    with pytest.raises(ValueError, match="concurrency"):
        TeacherSettings(concurrency=0)
    with pytest.raises(InputError, match="duplicate id"):
        judge_items(items(2) + items(1), settings(srv, tmp_path))
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    with pytest.raises(ConfigError, match="api_key"):
        judge_items(items(1), settings(srv, tmp_path))
    assert "json" in load_template("judge", "v1")["user"]
