"""Feedback extraction from Langfuse's legacy read API (self-hosted Langfuse v3), end to end against
a Langfuse-compatible server on 127.0.0.1 (tests/support/fake_langfuse.py) through the SDK's HTTP layer:
paging, both ways of fetching traces, Retry-After, auth errors, dedupe within and across runs, late
feedback in the overlap window, secrets kept out of logs and state. Langfuse v4, the switch between
the two and the pagination quirks of both: test_langfuse_v4.py.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/feedback/test_langfuse_extract.py -x
"""

from __future__ import annotations

import email.utils
import logging
import math
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest

from irsflow.errors import ConfigError, InputError, IrsflowError
from irsflow.feedback.langfuse import (
    Extraction,
    ExtractState,
    LangfuseAuthError,
    LangfuseError,
    LangfuseSettings,
    load_state,
    plan_window,
    retry_after_s,
    save_state,
)
from irsflow.retry import failure_kind
from tests.support.fake_langfuse import SCORES, TRACE, TRACES, FakeLangfuse

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LONG_AGO = time.time() - 3600  # "ingested an hour ago": visible whatever the lag knob says


@pytest.fixture()
def lf():
    with FakeLangfuse(public_key="pk-lf-" + secrets.token_hex(6), secret_key="sk-lf-" + secrets.token_hex(12)) as f:
        yield f


def run(settings, state=None, now=T0) -> tuple[list[dict], Extraction]:
    with Extraction(settings, state, now=now) as ext:
        records = list(ext)
    return records, ext


def thumbs(lf, n, start, every_s=60.0, delay_s=30.0, value=1, **kw) -> list[tuple[str, str]]:
    """``n`` traces ``every_s`` apart from ``start``, each with one thumb ``delay_s`` later."""
    out = []
    kw.setdefault("ingested_at", LONG_AGO)
    for i in range(n):
        ts = start + timedelta(seconds=i * every_s)
        tid = lf.add_trace(
            ts,
            [{"role": "user", "content": f"q{i}"}],
            {"role": "assistant", "content": f"a{i}"},
            ingested_at=kw["ingested_at"],
        )
        out.append((tid, lf.add_score(tid, value, ts + timedelta(seconds=delay_s), **kw)))
    return out


def test_the_sdk_parses_the_fake_and_sends_the_queries_we_send(lf):
    """The fake speaks the SDK's typed shapes, and our requests equal the SDK's own for the same call."""
    from langfuse.api import LangfuseAPI

    ((tid, sid),) = thumbs(lf, 1, T0 - timedelta(hours=1))
    api = LangfuseAPI(base_url=lf.url, username=lf.public_key, password=lf.secret_key)
    frm, to = T0 - timedelta(hours=2), T0
    page = api.scores.get_many(
        page=1, limit=100, name="user-feedback", data_type="BOOLEAN", from_timestamp=frm, to_timestamp=to
    )
    assert page.meta.total_items == 1 and page.data[0].data_type == "BOOLEAN"
    assert (page.data[0].id, page.data[0].trace_id, page.data[0].value, page.data[0].string_value) == (
        sid,
        tid,
        1.0,
        "True",
    )
    traces = api.trace.list(page=1, limit=10, order_by="timestamp.desc", fields="core,io")
    assert traces.data[0].id == tid and traces.data[0].input == [{"role": "user", "content": "q0"}]
    full = api.trace.get(tid, fields="core,io,scores")
    assert [s.id for s in full.scores] == [sid] and full.observations == []
    sdk_query = parse_qs(lf.log[0][3])
    run(lf.settings(overlap_minutes=0), ExtractState(watermark=frm), now=to)  # the same window [frm, to)
    ours = parse_qs([q for _, path, _, q in lf.log if path == SCORES][-1])
    assert ours == sdk_query


@pytest.mark.parametrize("mode", ["list", "get"])
def test_pages_to_the_end_and_hands_out_raw_traces(lf, mode):
    pairs = thumbs(lf, 230, T0 - timedelta(hours=5))
    lf.add_synthetic(20, start=T0 - timedelta(hours=6), feedback=0.0)  # traces nobody rated
    with Extraction(lf.settings(page_size=7, trace_fetch=mode), now=T0) as ext:
        it = iter(ext)
        records = [next(it)]
        assert lf.counts[SCORES] <= 2 and lf.counts[TRACES] <= 2  # streamed: the first record comes early
        records += list(it)
    assert ext.mode == mode
    assert sorted(r["score_id"] for r in records) == sorted(s for _, s in pairs)
    assert {r["trace_id"] for r in records} == {t for t, _ in pairs}
    assert lf.counts[SCORES] == math.ceil(230 / 7)
    assert lf.counts[TRACE] == (230 if mode == "get" else 0)
    rec = records[0]
    assert rec["trace"]["input"] == lf.traces[rec["trace_id"]]["json"]["input"]  # untouched
    assert rec["trace"]["output"] == lf.traces[rec["trace_id"]]["json"]["output"]
    assert rec["label"] == "up" and rec["score_value"] == 1.0 and rec["score_timestamp"].endswith("Z")


def test_auto_mode_lists_dense_feedback_and_gets_sparse_feedback(lf):
    lf.add_synthetic(300, start=T0 - timedelta(hours=3), every_s=30, feedback=1.0, seed=1)
    records, ext = run(lf.settings())
    assert ext.mode == "list" and len(records) == 300 and lf.counts[TRACE] == 0
    assert lf.counts[TRACES] == 3  # every trace listed once: no page read twice

    sparse = FakeLangfuse(lf.public_key, lf.secret_key).start()
    try:
        sparse.add_synthetic(300, start=T0 - timedelta(hours=3), every_s=30, feedback=0.01, seed=2)
        n = len(sparse.scores)
        records, ext = run(LangfuseSettings(host=sparse.url, public_key=lf.public_key, secret_key=lf.secret_key))
        assert ext.mode == "get" and len(records) == n and sparse.counts[TRACE] == n and sparse.counts[TRACES] == 1
    finally:
        sparse.stop()


def test_trace_older_than_the_lookback_is_fetched_by_id(lf):
    thumbs(lf, 10, T0 - timedelta(hours=2))
    old = lf.add_trace(T0 - timedelta(hours=5), "hi", "hello", ingested_at=LONG_AGO)
    late = lf.add_score(old, 0, T0 - timedelta(minutes=90))  # feedback 3.5 h after the chat
    records, ext = run(lf.settings(trace_fetch="list", start=T0 - timedelta(hours=3)))
    assert len(records) == 11 and lf.counts[TRACE] == 1
    assert [r for r in records if r["score_id"] == late][0]["label"] == "down"


@pytest.mark.parametrize("header", ["seconds", "http-date"])
def test_429_waits_for_retry_after(lf, header):
    thumbs(lf, 5, T0 - timedelta(hours=1))
    until = time.time() + 2
    lf.fail_next(SCORES, 429, retry_after="1" if header == "seconds" else email.utils.formatdate(until, usegmt=True))
    t = time.monotonic()
    records, ext = run(lf.settings())
    assert len(records) == 5 and ext.stats["retries"] == 1
    (t429, *_), (t_retry, *_) = [e for e in lf.log if e[1] == SCORES][:2]
    if header == "seconds":
        assert t_retry - t429 >= 1.0 and time.monotonic() - t >= 1.0
    else:
        assert t_retry >= math.floor(until)  # the date has whole seconds


def test_5xx_and_connection_errors_retry_then_fail_as_transient(lf):
    thumbs(lf, 5, T0 - timedelta(hours=1))
    lf.fail_next(TRACES, 503, times=2)
    records, ext = run(lf.settings(max_retries=2, trace_fetch="list"))
    assert len(records) == 5 and ext.stats["retries"] == 2

    lf.fail_next(SCORES, 500, times=3)
    with pytest.raises(LangfuseError) as err:
        run(lf.settings(max_retries=2))
    assert err.value.status_code == 500 and "3 attempt" in str(err.value)
    assert failure_kind(err.value) == "transient"  # the Prefect layer's retry decision

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connection refused
    dead = LangfuseSettings(
        host=f"http://127.0.0.1:{port}", public_key="pk", secret_key="sk", max_retries=1, backoff_s=0.01
    )
    with pytest.raises(LangfuseError, match="cannot reach") as err:
        run(dead)
    assert err.value.status_code is None and failure_kind(err.value) == "transient"


def test_401_names_the_env_vars_never_the_keys(lf):
    thumbs(lf, 2, T0 - timedelta(hours=1))
    wrong = "sk-lf-" + secrets.token_hex(12)
    with pytest.raises(LangfuseAuthError) as err:
        run(LangfuseSettings(host=lf.url, public_key=lf.public_key, secret_key=wrong))
    msg = str(err.value)
    assert "LANGFUSE_PUBLIC_KEY" in msg and "LANGFUSE_SECRET_KEY" in msg and "401" in msg
    assert wrong not in msg and lf.public_key not in msg
    assert isinstance(err.value, InputError) and failure_kind(err.value) == "input"
    assert lf.counts[SCORES] == 1  # never retried


def test_duplicates_within_a_run_and_across_runs(lf, tmp_path):
    """Newer feedback that becomes visible mid-run shifts offset pages: page 2 repeats the end of
    page 1. Those repeats are dropped; the new feedback comes in the next run, once."""
    pairs = thumbs(lf, 50, T0 - timedelta(minutes=50), every_s=55)
    added = []

    def burst(path, q, status):  # after page 1 is computed, before it is sent
        if path == SCORES and q.get("page") == ["1"] and not added:
            added.extend(thumbs(lf, 4, T0 - timedelta(minutes=3), every_s=10, delay_s=5))

    lf.hooks.append(burst)
    records, ext = run(lf.settings(page_size=10))
    assert len(records) == 50 and len({r["score_id"] for r in records}) == 50
    assert ext.stats["duplicates"] == 4
    path = tmp_path / "state.json"
    save_state(path, ext.next_state())

    records2, ext2 = run(lf.settings(page_size=10), load_state(path), now=T0 + timedelta(minutes=5))
    assert sorted(r["score_id"] for r in records2) == sorted(s for _, s in added)
    in_overlap = [s for t, s in pairs if lf.scores[s]["ts"] >= (T0 - timedelta(minutes=15)).timestamp()]
    assert ext2.stats["seen_before"] == len(in_overlap) > 0
    save_state(path, ext2.next_state())
    records3, ext3 = run(lf.settings(page_size=10), load_state(path), now=T0 + timedelta(minutes=6))
    assert records3 == [] and ext3.stats["traces_fetched"] == 0


def test_late_feedback_inside_the_overlap_comes_on_the_next_run_exactly_once(lf, tmp_path):
    thumbs(lf, 20, T0 - timedelta(hours=1), every_s=120)
    tid = lf.add_trace(T0 - timedelta(minutes=8), "late q", "late a", ingested_at=LONG_AGO)
    late = lf.add_score(tid, 0, T0 - timedelta(minutes=5))  # ingested now: inside the read lag
    lf.lag_s = 60
    path = tmp_path / "state.json"
    records, ext = run(lf.settings(), load_state(path))
    assert len(records) == 20 and late not in {r["score_id"] for r in records}
    save_state(path, ext.next_state())

    lf.lag_s = 0  # the read side caught up
    for minutes, expected in ((10, [late]), (20, []), (21, [])):
        records, ext = run(lf.settings(), load_state(path), now=T0 + timedelta(minutes=minutes))
        assert [r["score_id"] for r in records] == expected
        save_state(path, ext.next_state())
    assert load_state(path).watermark == T0 + timedelta(minutes=21)


@pytest.mark.parametrize("mode", ["list", "get"])
def test_one_record_per_trace_the_latest_feedback(lf, mode):
    tid = lf.add_trace(T0 - timedelta(minutes=40), "q", "a", ingested_at=LONG_AGO)
    up = lf.add_score(tid, 1, T0 - timedelta(minutes=39), ingested_at=LONG_AGO)
    down = lf.add_score(tid, 0, T0 - timedelta(minutes=30), ingested_at=LONG_AGO)
    thumbs(lf, 3, T0 - timedelta(minutes=50))
    records, ext = run(lf.settings(trace_fetch=mode, overlap_minutes=60))
    mine = [r for r in records if r["trace_id"] == tid]
    assert [(r["score_id"], r["label"]) for r in mine] == [(down, "down")] and ext.stats["superseded"] == 1
    both, _ = run(lf.settings(trace_fetch=mode, latest_per_trace=False))
    assert sorted(r["score_id"] for r in both if r["trace_id"] == tid) == sorted([up, down])

    # An older thumb that shows up late must not override the newer one handed out before.
    state = ext.next_state()
    lf.add_score(tid, 1, T0 - timedelta(minutes=35), ingested_at=LONG_AGO)
    later, _ = run(lf.settings(trace_fetch=mode, overlap_minutes=60), state, now=T0 + timedelta(minutes=1))
    assert later == []


def test_unknown_values_are_labelled_none(lf):
    for i, value in enumerate(["good", "bad", "meh"]):
        tid = lf.add_trace(T0 - timedelta(minutes=30 - i), "q", "a", ingested_at=LONG_AGO)
        lf.add_score(tid, value, T0 - timedelta(minutes=20 - i), data_type="CATEGORICAL", ingested_at=LONG_AGO)
    records, ext = run(lf.settings(score_data_type="CATEGORICAL", up_values=["good"], down_values=["bad"]))
    assert sorted((r["score_value"], r["label"] or "") for r in records) == [
        ("bad", "down"),
        ("good", "up"),
        ("meh", ""),
    ]
    assert ext.stats["unknown"] == 1 and ext.stats["records"] == 3


def test_secrets_stay_out_of_logs_errors_reprs_and_state(lf, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug lines included
    thumbs(lf, 3, T0 - timedelta(hours=1))
    s = lf.settings()
    lf.fail_next(SCORES, 429, retry_after="0")
    records, ext = run(s)
    save_state(tmp_path / "state.json", ext.next_state())
    with pytest.raises(LangfuseAuthError) as err:
        run(LangfuseSettings(host=lf.url, public_key=lf.public_key, secret_key="sk-lf-wrong"))
    seen = [
        caplog.text,
        str(err.value),
        repr(s),
        str(s),
        str(s.model_dump()),
        s.model_dump_json(),
        (tmp_path / "state.json").read_text(),
    ]
    assert len(records) == 3 and "retry 1/" in caplog.text
    for text in seen:
        assert lf.secret_key not in text and lf.public_key not in text


def test_settings_from_env_and_bad_settings(monkeypatch):
    monkeypatch.delenv("LANGFUSE_HOST", raising=False)
    monkeypatch.setenv("LANGFUSE_BASE_URL", "https://lf.example.com/")
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
    s = LangfuseSettings.from_env(environment="production")
    assert s.host == "https://lf.example.com" and s.environment == ("production",)
    assert s.secret_key.get_secret_value() == "sk-lf-2"
    monkeypatch.delenv("LANGFUSE_SECRET_KEY")
    with pytest.raises(ConfigError, match="secret_key: .*LANGFUSE_SECRET_KEY"):
        LangfuseSettings.from_env()
    with pytest.raises(ConfigError, match="page_siz"):
        LangfuseSettings.from_env(secret_key="sk-lf-2", page_siz=5)
    with pytest.raises(ConfigError, match="overlap"):
        LangfuseSettings.from_env(secret_key="sk-lf-2", up_values=[1], down_values=[1])
    with pytest.raises(ConfigError) as err:
        LangfuseSettings.from_env(secret_key=["sk-lf-leaky"])
    assert "sk-lf-leaky" not in str(err.value)


def test_window_state_file_and_retry_after_parsing(tmp_path):
    s = LangfuseSettings(
        host="http://x", public_key="p", secret_key="s", overlap_minutes=15, start=datetime(2026, 1, 1)
    )
    assert plan_window(ExtractState(), T0, s) == (datetime(2026, 1, 1, tzinfo=UTC), T0)
    assert plan_window(ExtractState(watermark=T0), T0 + timedelta(hours=1), s) == (
        T0 - timedelta(minutes=15),
        T0 + timedelta(hours=1),
    )
    assert plan_window(ExtractState(watermark=T0), T0 - timedelta(hours=1), s)[1] == T0  # clock went back
    assert load_state(tmp_path / "missing.json") == ExtractState()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        load_state(tmp_path / "bad.json")
    with Extraction(s, now=T0) as ext, pytest.raises(IrsflowError, match="incomplete"):
        ext.next_state()
    assert retry_after_s({"Retry-After": "7"}) == 7.0
    assert retry_after_s({"retry-after": email.utils.formatdate(1000, usegmt=True)}, now=990) == 10.0
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
