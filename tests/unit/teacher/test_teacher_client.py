"""Teacher client against an OpenAI-compatible HTTP server on 127.0.0.1 that answers like DeepSeek V4
(tests/support/fake_openai.py): what the server received (model, thinking switch, max_tokens), replies read
honestly (truncated, schema mismatch, copied example...), reasoning never parsed and billed, the
cache, retries, the budget, and an outage failing loudly.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/teacher/test_teacher_client.py -x
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime

import pytest

from irsflow.errors import ConfigError, InputError
from irsflow.retry import failure_kind
from irsflow.teacher import (
    JudgementCache,
    TeacherRepliesUnusable,
    TeacherSettings,
    TeacherUnavailable,
    judge_items,
    load_template,
    read_usage,
)
from tests.support.fake_openai import FakeOpenAI

KEY = "sk-test-SECRET-7f3a9c1e55d0"


@pytest.fixture
def srv(monkeypatch):
    monkeypatch.delenv("IRSFLOW_TEACHER_API_KEY", raising=False)
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as server:
        yield server


def settings(srv, tmp_path, **kw) -> TeacherSettings:
    base = dict(
        base_url=srv.base_url,
        cache_path=tmp_path / "teacher" / "cache.sqlite",
        backoff_s=0.01,
        max_retries=2,
        max_tokens=64,
    )
    return TeacherSettings(**{**base, **kw})


def items(n: int, tag: str = "") -> list[dict]:
    return [
        {
            "id": f"q{i}{tag}",
            "prompt": f"Question {i}{tag}: fever for 3 days?",
            "answer": f"Answer {i}",
            "context": "adult" if i % 2 else "",
        }
        for i in range(n)
    ]


def ledger(s: TeacherSettings) -> list[dict]:
    return read_usage(s.resolved_cache_path().parent / "teacher_usage.csv")


def test_deepseek_v4_request_and_valid_judgements(srv, tmp_path):
    s = settings(srv, tmp_path)
    out = judge_items(items(3), s)
    assert [j.id for j in out] == ["q0", "q1", "q2"]
    assert all(j.status == "ok" and j.teacher_score == 0.75 and j.safety_flag is False and not j.cached for j in out)
    for req in srv.requests:  # what the server received
        assert req["model"] == "deepseek-v4-flash" and req["thinking"] == {"type": "disabled"}
        assert req["max_tokens"] == 64 and req["temperature"] == 0 and req["response_format"] == {"type": "json_object"}
    assert all("reasoning_content" not in r["choices"][0]["message"] for r in srv.replies)  # thinking was off
    sent = sorted(r["messages"][1]["content"] for r in srv.requests)  # arrival order is concurrent
    assert "QUESTION:\nQuestion 0: fever" in sent[0] and "ANSWER:\nAnswer 0" in sent[0]
    [row] = ledger(s)
    assert (row["model"], row["thinking"], row["calls"], row["ok"], row["tokens_reasoning"]) == (
        "deepseek-v4-flash",
        "disabled",
        "3",
        "3",
        "0",
    )

    n = JudgementCache(s.resolved_cache_path()).export_jsonl(tmp_path / "teacher_judgements.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "teacher_judgements.jsonl").read_text().splitlines()]
    assert n == 3 and {r["id"] for r in rows} == {"q0", "q1", "q2"} and {r["status"] for r in rows} == {"ok"}
    assert {"teacher_score", "safety_flag", "comment", "best_answer", "model", "template_version"} <= set(rows[0])


def test_thinking_is_billed_never_parsed_and_omit_sends_nothing(srv, tmp_path):
    # enabled: the reply carries reasoning_content with a draft verdict (score 0.01) that must not be used
    s = settings(srv, tmp_path, thinking="enabled", max_tokens=256)
    out = judge_items(items(3), s)
    assert {j.teacher_score for j in out} == {0.75} and all(r["thinking"] == {"type": "enabled"} for r in srv.requests)
    # the ledger bills what the server reported: completion tokens include the reasoning tokens
    usage = [r["usage"] for r in srv.replies]
    [row] = ledger(s)
    assert int(row["tokens_out"]) == sum(u["completion_tokens"] for u in usage)
    assert int(row["tokens_reasoning"]) == sum(u["completion_tokens_details"]["reasoning_tokens"] for u in usage) > 0
    assert int(row["tokens_cache_hit"]) == sum(u["prompt_cache_hit_tokens"] for u in usage) > 0  # one system prompt
    p = s.prices["deepseek-v4-flash"]
    expected = sum(
        (
            u["prompt_cache_miss_tokens"] * p.input_per_mtok
            + u["prompt_cache_hit_tokens"] * p.input_cache_hit_per_mtok
            + u["completion_tokens"] * p.output_per_mtok
        )
        / 1e6
        for u in usage
    )
    # billed at the rate of the hour the calls were sent in (peak hours: twice the list price)
    assert float(row["cost_usd"]) == pytest.approx(expected * p.multiplier(datetime.now(UTC).hour), abs=1e-6)

    # reasoning only, content blank: blank, never the verdict drafted in the reasoning
    srv.script([{"kind": "blank"}])
    [j] = judge_items(items(1, tag="r"), s.model_copy(update={"max_retries": 0}), allow_failures=True)
    assert j.status == "blank" and j.teacher_score is None and "reasoning_content only" in j.error

    # the thinking alone fills max_tokens: cut off ("length"), asked once more with twice the budget
    before = srv.count
    [j] = judge_items(items(1, tag="t"), s.model_copy(update={"max_tokens": 40}))
    assert [r["max_tokens"] for r in srv.requests[before:]] == [40, 80]
    assert srv.replies[before]["choices"][0]["finish_reason"] == "length" and j.status == "ok" and j.attempts == 2

    before = srv.count  # omit: no thinking key at all, for endpoints without DeepSeek's switch
    judge_items(items(1, tag="o"), s.model_copy(update={"thinking": "omit"}))
    assert "thinking" not in srv.requests[before]


def test_truncated_reply_retried_once_with_double_budget_then_recorded(srv, tmp_path):
    s = settings(srv, tmp_path)
    srv.script([{"kind": "ramble"}, {"kind": "ramble"}])  # JSON that never ends
    [j] = judge_items(items(1), s, allow_failures=True)
    assert j.status == "truncated" and j.attempts == 2 and j.teacher_score is None and j.finish_reason == "length"
    assert [r["max_tokens"] for r in srv.requests] == [64, 128] and "broken" not in j.error and "JSON" not in j.error
    # asking again would return the same: the rerun makes zero calls and says truncated again
    [again] = judge_items(items(1), s, allow_failures=True)
    assert srv.count == 2 and again.status == "truncated" and again.cached
    # a larger max_tokens is how a user asks again
    [j] = judge_items(items(1), s.model_copy(update={"max_tokens": 256}))
    assert j.status == "ok" and srv.count == 3
    # a long but finite reply that fits into twice the budget succeeds on the second try
    srv.script([{"kind": "ok", "comment": "x" * 200}] * 2)  # the same reply, asked twice
    [j] = judge_items(items(1, tag="long"), s)
    assert j.status == "ok" and j.comment == "x" * 200 and [r["max_tokens"] for r in srv.requests[-2:]] == [64, 128]


def test_unusable_replies_named_cached_and_blank_asked_again(srv, tmp_path):
    s = settings(srv, tmp_path, max_retries=1)
    marks = {"q0": "schema", "q1": "invalid", "q2": "copy", "q3": "blank", "q4": "filter"}
    srv.route = lambda req: {
        "kind": next(k for q, k in marks.items() if f"Question {q[1:]}:" in req["messages"][1]["content"])
    }
    out = {j.id: j for j in judge_items(items(5), s, allow_failures=True)}
    assert {i: j.status for i, j in out.items()} == {
        "q0": "schema_mismatch",
        "q1": "invalid_json",
        "q2": "copied_example",
        "q3": "blank",
        "q4": "content_filter",
    }
    assert all(j.teacher_score is None and j.attempts == 2 for j in out.values())  # 1 + max_retries, then given up
    assert "teacher_score" in out["q0"].error and "safety_flag" in out["q0"].error  # the fields that failed
    assert srv.count == 10
    [row] = ledger(s)
    assert (row["failures"], row["schema_mismatch"], row["copied_example"], row["ok"]) == ("5", "1", "1", "0")
    # the judge's own replies are kept (a rerun makes no call for them); a blank one is asked again
    again = {j.id: j for j in judge_items(items(5), s, allow_failures=True)}
    assert srv.count == 12 and [i for i, j in again.items() if not j.cached] == ["q3"]
    assert again["q2"].status == "copied_example"


def test_429_retry_after_and_deepseek_keepalive_lines(srv, tmp_path):
    s = settings(srv, tmp_path, backoff_s=0.01)
    srv.script([{"kind": "status", "status": 429, "retry_after": "1"}, {"kind": "ok", "keepalive": 3}])
    [j] = judge_items(items(1), s)
    assert j.status == "ok" and srv.count == 2 and srv.statuses[0] == 429
    assert srv.times[1] - srv.times[0] >= 0.95, "the retry came before Retry-After elapsed"


def test_500_retried_400_not_and_402_401_are_config_errors(srv, tmp_path):
    s = settings(srv, tmp_path, max_retries=3)
    srv.script([{"kind": "status", "status": 500}, {"kind": "status", "status": 503}, {"kind": "resource"}])
    [j] = judge_items(items(1), s)
    assert j.status == "ok" and j.attempts == 4 and srv.count == 4

    srv.script([{"kind": "status", "status": 400}])
    [j] = judge_items(items(1, tag="x"), s, allow_failures=True)
    assert j.status == "failed" and j.attempts == 1 and "400" in j.error and srv.count == 5

    srv.script([{"kind": "status", "status": 402}])
    with pytest.raises(ConfigError, match="HTTP 402 .insufficient balance"):
        judge_items(items(1, tag="y"), s)
    with pytest.raises(ConfigError, match="teacher.api_key: .* refused it .HTTP 401"):
        judge_items(items(1, tag="z"), s.model_copy(update={"api_key": type(s.api_key)("sk-wrong")}))
    with pytest.raises(TeacherUnavailable):  # a model the endpoint does not have: 400 Model Not Exist
        judge_items(items(1, tag="m"), s.model_copy(update={"model": "deepseek-chat"}))


def test_timeout_retried(srv, tmp_path):
    s = settings(srv, tmp_path, timeout_s=0.3)
    srv.script([{"kind": "ok", "delay": 1.0, "score": 0.1}])  # answered too late: must not be used
    [j] = judge_items(items(1), s)
    assert j.status == "ok" and j.attempts == 2 and j.teacher_score == 0.75 and srv.count == 2


def test_outage_fails_with_the_counts_unless_a_share_is_allowed(srv, tmp_path):
    s = settings(srv, tmp_path, max_retries=0)
    srv.default = {"kind": "status", "status": 503}
    with pytest.raises(TeacherUnavailable) as err:
        judge_items(items(4), s)
    assert (err.value.failed, err.value.total, err.value.by_status) == (4, 4, {"failed": 4})
    assert "4 of 4" in str(err.value) and failure_kind(err.value) == "transient"  # retried by the phase task
    [row] = ledger(s)  # the ledger is written before the error
    assert row["failures"] == "4" and row["calls"] == "4"

    srv.default = {"kind": "ok"}  # 1 of 4 fails: within max_failed_share 0.25, over the default 0
    srv.route = lambda req: (
        {"kind": "status", "status": 503} if "Question 0a" in req["messages"][1]["content"] else None
    )
    out = judge_items(items(4, tag="a"), s.model_copy(update={"max_failed_share": 0.25}))
    assert [j.status for j in out] == ["failed", "ok", "ok", "ok"]
    with pytest.raises(TeacherUnavailable, match="1 of 4 judgements failed"):
        judge_items(items(4, tag="a"), s)  # the three ok are cached: only the failed one is asked again

    # replies the judge gave (not an outage): not retried by the orchestrator, the setting named
    srv.route = lambda req: {"kind": "ramble"}
    with pytest.raises(TeacherRepliesUnusable, match="2 of 2 .*2 truncated.*raise teacher.max_tokens") as err:
        judge_items(items(2, tag="b"), s)
    assert failure_kind(err.value) == "input"


def test_budget_stops_at_cap_and_keeps_finished_work(srv, tmp_path):
    # 1000 USD per million tokens: a call costs ~0.3 USD, its bound ~1.2 USD, so 3 USD buys a few calls.
    prices = {"deepseek-v4-flash": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}
    s = TeacherSettings.model_validate(
        {
            **settings(srv, tmp_path).model_dump(),
            "api_key": KEY,
            "cache_path": tmp_path / "teacher" / "cache.sqlite",
            "prices": prices,
            "budget_usd": 3.0,
            "concurrency": 4,
        }
    )
    out = judge_items(items(20), s)
    ok = [j for j in out if j.status == "ok"]
    stopped = [j for j in out if j.status == "budget_stopped"]
    assert 0 < len(ok) < 20 and len(ok) + len(stopped) == 20 and srv.count == len(ok)
    [row] = ledger(s)
    assert float(row["cost_usd"]) <= 3.0 and row["budget_stopped"] == "True"
    assert int(row["calls"]) == len(ok) and int(row["budget_stopped_items"]) == len(stopped)
    # not stopped early by in-flight reservations: it spent until one more bound (~1.2 USD) no longer fit
    assert float(row["cost_usd"]) > 3.0 - 1.5 and int(row["tokens_in"]) > 0
    # finished work is kept: a rerun without a cap calls only for the stopped items
    calls_before = srv.count
    again = judge_items(items(20), s.model_copy(update={"budget_usd": None}))
    assert all(j.status == "ok" for j in again) and srv.count - calls_before == len(stopped)


def test_a_model_without_a_price(srv, tmp_path):
    with pytest.raises(ValueError, match="no price for model 'my-judge'.*teacher.prices.my-judge"):
        TeacherSettings(model="my-judge", budget_usd=1.0)
    s = settings(srv, tmp_path)
    srv.models.add("my-judge")
    # a budget without a price is refused before any call, even past the validator (model_copy)
    with pytest.raises(ConfigError, match="no price for model 'my-judge'"):
        judge_items(items(1), s.model_copy(update={"model": "my-judge", "budget_usd": 1.0}))
    assert srv.count == 0
    # without a budget it runs, and the ledger says the cost is unknown, not $0
    judge_items(items(1), s.model_copy(update={"model": "my-judge"}))
    [row] = ledger(s)
    assert srv.count == 1 and row["cost_usd"] == "" and int(row["tokens_out"]) > 0
    # DeepSeek V4's published rates are shipped; the retired ids have none
    prices = TeacherSettings().prices
    assert {"deepseek-v4-flash", "deepseek-v4-pro"} <= set(prices) and "deepseek-chat" not in prices
    flash, pro = prices["deepseek-v4-flash"], prices["deepseek-v4-pro"]
    assert (flash.input_per_mtok, flash.output_per_mtok, pro.input_per_mtok, pro.output_per_mtok) == (
        0.14,
        0.28,
        0.435,
        0.87,
    )


def test_peak_hours_double_the_rate_and_bounds_use_the_peak_rate():
    from irsflow.teacher.client import _Run
    from irsflow.teacher.replies import Tokens

    p = TeacherSettings().prices["deepseek-v4-flash"]
    # 01:00-04:00 and 06:00-10:00 UTC (09-12 and 14-18 Beijing time) are peak
    assert [p.multiplier(h) for h in (0, 1, 3, 4, 5, 6, 9, 10, 23)] == [1, 2, 2, 1, 1, 2, 2, 1, 1]
    run = object.__new__(_Run)
    run.price = p
    t = Tokens(prompt=1_000_000, completion=1_000_000)
    assert run.cost(t, 12) == pytest.approx(0.14 + 0.28) and run.cost(t, 2) == pytest.approx(2 * (0.14 + 0.28))
    assert run.cost(t) == run.cost(t, 2)  # unknown hour (a budget's bound): the peak rate
    # settings travel as JSON (flow parameters, job configs): the windows survive the round trip
    from irsflow.teacher.settings import TeacherConfig

    cfg = TeacherConfig()
    assert TeacherConfig.model_validate(json.loads(cfg.model_dump_json())) == cfg


def test_key_never_in_files_logs_or_errors(srv, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # openai/httpx2 debug logging included
    s = settings(srv, tmp_path, max_retries=1)
    srv.script([{"kind": "status", "status": 429, "retry_after": "0"}, {"kind": "invalid"}, {"kind": "invalid"}])
    judge_items(items(4), s, usage_path=tmp_path / "teacher_usage.csv", allow_failures=True)
    JudgementCache(s.resolved_cache_path()).export_jsonl(tmp_path / "teacher_judgements.jsonl")
    with pytest.raises(ConfigError) as bad:
        judge_items(items(1, tag="k"), s.model_copy(update={"api_key": type(s.api_key)(KEY + "-wrong")}))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 3
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in caplog.text and KEY not in str(bad.value) and KEY not in repr(s)


def test_config_input_errors_and_an_old_cache(srv, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="concurrency"):
        TeacherSettings(concurrency=0)
    with pytest.raises(ValueError, match="thinking"):
        TeacherSettings(thinking="on")
    with pytest.raises(InputError, match="duplicate id"):
        judge_items(items(2) + items(1), settings(srv, tmp_path))
    assert "json" in load_template("judge", "v1")["user"]
    # a cache written before the status columns existed still serves its verdicts
    old = tmp_path / "old" / "cache.sqlite"
    old.parent.mkdir()
    s = settings(srv, tmp_path, cache_path=old)
    from irsflow.teacher.client import _key

    db = sqlite3.connect(old)
    db.execute(
        "CREATE TABLE judgements (key TEXT PRIMARY KEY, item_id TEXT, model TEXT, template_version TEXT, "
        "prompt TEXT, answer TEXT, context TEXT, reply TEXT, tokens_in INTEGER, tokens_out INTEGER, "
        "cost_usd REAL, created_at TEXT)"
    )
    it = items(1)[0]
    db.execute(
        "INSERT INTO judgements VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            _key(s, it),
            "q0",
            s.model,
            "v1",
            it["prompt"],
            it["answer"],
            it["context"],
            json.dumps({"teacher_score": 0.3, "safety_flag": True, "comment": "old", "best_answer": None}),
            1,
            1,
            0.0,
            "2026-01-01",
        ),
    )
    db.commit()
    db.close()
    [j] = judge_items(items(1), s)
    assert j.cached and j.status == "ok" and j.teacher_score == 0.3 and srv.count == 0
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    with pytest.raises(ConfigError, match="api_key"):
        judge_items(items(1, tag="n"), settings(srv, tmp_path))
