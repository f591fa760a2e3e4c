"""Feedback extraction from Langfuse v4 (``/api/public/v3/scores`` + ``/api/public/v2/observations``)
and the choice between the two read API generations, against tests/support/fake_langfuse.py (built from
the Langfuse server's own definitions): the SDK parses what the fake serves; the three ways the SDK
records a conversation become clean chat rows; auto mode switches once after a 410/404 and
remembers it; a forced generation fails clearly; pagination with short and empty pages and tied
timestamps hands out every thumb exactly once over two incremental runs, in both generations.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/feedback/test_langfuse_v4.py -x
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest

from irsflow.feedback.langfuse import Extraction, ExtractState, LangfuseError, load_state, save_state
from irsflow.feedback.langfuse_v4 import json_text
from irsflow.feedback.transform import to_messages
from tests.support.fake_langfuse import OBSERVATIONS, SCORES, SCORES_V3, TRACE, TRACES, FakeLangfuse

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
OLD = time.time() - 3600  # "ingested an hour ago": visible whatever the lag knob says


def fake(**kw) -> FakeLangfuse:
    return FakeLangfuse(public_key="pk-lf-" + secrets.token_hex(6), secret_key="sk-lf-" + secrets.token_hex(12), **kw)


def run(settings, state=None, now=T0) -> tuple[list[dict], Extraction]:
    with Extraction(settings, state, now=now) as ext:
        records = list(ext)
    return records, ext


def lc(kind: str, content, **extra) -> dict:
    """A LangChain message as the Langfuse SDK's serializer records it (pydantic ``model_dump``)."""
    return {
        "content": content,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": kind,
        "name": None,
        "id": f"run-{secrets.token_hex(4)}",
        "example": False,
        **extra,
    }


def record_three_shapes(lf: FakeLangfuse) -> dict[str, tuple[str, list[dict]]]:
    """Traces as the SDK records them; returns name -> (trace id, the chat rows they must give)."""
    out = {}
    t = T0 - timedelta(minutes=50)
    # 1. OpenAI integration (langfuse/openai.py): a GENERATION, input the messages, output the message
    tid = lf.add_trace(
        t,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        {"role": "assistant", "content": "Paris.", "audio": None},
        obs_type="GENERATION",
        ingested_at=OLD,
    )
    out["openai"] = (
        tid,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ],
    )
    # 2. @observe (_client/observe.py): {"args", "kwargs"} in, the return value (a string, sent as is) out,
    #    with the OpenAI GENERATION nested under it (not the trace's input)
    tid = lf.add_trace(
        t + timedelta(minutes=1),
        {"args": ["What is 2+2?"], "kwargs": {"temperature": 0}},
        "4.",
        obs_type="SPAN",
        ingested_at=OLD,
    )
    root = next(o for o in lf.observations.values() if o["json"]["traceId"] == tid)["json"]["id"]
    lf.add_observation(
        tid,
        t + timedelta(minutes=1, seconds=1),
        type="GENERATION",
        parent=root,
        ingested_at=OLD,
        input=[{"role": "system", "content": "internal prompt"}, {"role": "user", "content": "2+2"}],
        output={"role": "assistant", "content": "4."},
    )
    out["observe"] = tid, [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]
    tid = lf.add_trace(
        t + timedelta(minutes=2),
        {"args": [], "kwargs": {"question": "Why is the sky blue?", "user": "u1"}},
        "Rayleigh scattering.",
        ingested_at=OLD,
        root="legacy",
    )  # synthetic t-<id> root
    out["observe-kwargs"] = (
        tid,
        [{"role": "user", "content": "Why is the sky blue?"}, {"role": "assistant", "content": "Rayleigh scattering."}],
    )
    # 3. a LangGraph agent through the LangChain callback: state {"messages"} in and out, a tool round
    #    inside; its root is an app root under a web framework's request span (no io)
    state_in = {"messages": [lc("system", "You help with weather."), lc("human", "Weather in Paris?")]}
    state_out = {
        "messages": [
            *state_in["messages"],
            lc("ai", "", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1", "type": "tool_call"}]),
            lc("tool", "18C, sunny", tool_call_id="c1"),
            lc("ai", [{"type": "text", "text": "It is sunny, 18C."}], tool_calls=[]),
        ]
    }
    tid = lf.add_trace(t + timedelta(minutes=3), state_in, state_out, obs_type="CHAIN", root="app", ingested_at=OLD)
    out["langgraph"] = (
        tid,
        [
            {"role": "system", "content": "You help with weather."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "It is sunny, 18C."},
        ],
    )
    for i, (tid, _) in enumerate(out.values()):
        lf.add_score(tid, i % 2, t + timedelta(minutes=10 + i), ingested_at=OLD, comment=f"c{i}")
    return out


def test_the_sdk_parses_the_fake_and_sends_the_queries_we_send():
    """The fake speaks the SDK's typed v4 shapes, and our score query equals the SDK's own."""
    from langfuse.api import LangfuseAPI

    with fake(legacy="gone", cloud=True) as lf:
        shapes = record_three_shapes(lf)
        api = LangfuseAPI(base_url=lf.url, username=lf.public_key, password=lf.secret_key)
        frm, to = T0 - timedelta(hours=1), T0
        page = api.scores_v3.get_many_v3(
            limit=100,
            fields="details,subject",
            name="user-feedback",
            data_type="BOOLEAN",
            from_timestamp=frm,
            to_timestamp=to,
        )
        assert sorted(s.subject.id for s in page.data) == sorted(t for t, _ in shapes.values())
        assert {s.value for s in page.data} == {True, False} and page.meta.cursor is None
        obs = api.observations.get_many(
            trace_id=shapes["openai"][0], is_root_observation=True, fields="core,basic,io,trace_context"
        )
        assert obs.data[0].type == "GENERATION" and obs.data[0].input.startswith('[{"role": "system"')
        sdk_query = parse_qs([q for _, p, _, q in lf.log if p == SCORES_V3][0])
        run(lf.settings(api_version="v4", overlap_minutes=0), ExtractState(watermark=frm), now=to)
        ours = parse_qs([q for _, p, _, q in lf.log if p == SCORES_V3][1])
        assert ours == sdk_query


@pytest.mark.parametrize("mode", ["list", "get"])
def test_v4_hands_out_the_three_conversation_shapes_as_chat_rows(mode):
    with fake(legacy="gone", cloud=True) as lf:
        shapes = record_three_shapes(lf)
        records, ext = run(lf.settings(api_version="v4", trace_fetch=mode))
    assert (ext.api, ext.mode) == ("v4", mode) and lf.counts[SCORES] == 0
    by_trace = {r["trace_id"]: r for r in records}
    assert sorted(by_trace) == sorted(t for t, _ in shapes.values())
    for name, (tid, chat) in shapes.items():
        rec = by_trace[tid]
        assert to_messages(rec["trace"]["input"], rec["trace"]["output"]) == chat, name
    rec = by_trace[shapes["openai"][0]]
    assert rec["label"] in ("up", "down") and rec["comment"] == "c0" and rec["trace"]["name"] == "chat"
    assert rec["score_timestamp"] == "2026-11-02T11:20:00.000Z"
    assert rec["trace"]["timestamp"] == "2026-11-02T11:10:00.000Z"
    assert by_trace[shapes["observe"][0]]["trace"]["output"] == "4."  # JSON text parsed; plain text kept


@pytest.mark.parametrize("legacy,code", [("gone", 410), ("events_only", 404)])
def test_auto_switches_once_after_a_dead_legacy_route_and_remembers(tmp_path, caplog, legacy, code):
    caplog.set_level(logging.WARNING)
    path = tmp_path / "state.json"
    with fake(legacy=legacy, cloud=legacy == "gone") as lf:
        shapes = record_three_shapes(lf)
        records, ext = run(lf.settings(page_size=2), load_state(path))
        assert ext.api == "v4" and ext.stats["api_switches"] == 1
        assert sorted(r["trace_id"] for r in records) == sorted(t for t, _ in shapes.values())
        assert (lf.counts[SCORES], lf.counts[TRACES], lf.counts[TRACE]) == (1, 0, 0)  # the dead route once
        assert f"HTTP {code}" in caplog.text and "switching to the v4 API" in caplog.text
        save_state(path, ext.next_state())
        assert load_state(path).api_version == "v4"

        tid = lf.add_trace(T0 + timedelta(minutes=1), "New question?", "New answer.", ingested_at=OLD)
        new = lf.add_score(tid, 1, T0 + timedelta(minutes=2), ingested_at=OLD)
        records, ext = run(lf.settings(page_size=2), load_state(path), now=T0 + timedelta(minutes=5))
    assert [r["score_id"] for r in records] == [new] and ext.stats["api_switches"] == 0
    assert lf.counts[SCORES] == 1  # the next run went straight to v4


def test_a_forced_generation_fails_clearly_and_auto_finds_a_v3_server(tmp_path):
    with fake(legacy="gone", cloud=True) as lf:
        record_three_shapes(lf)
        with pytest.raises(LangfuseError) as err:
            run(lf.settings(api_version="v3"))
        assert err.value.status_code == 410 and "LEGACY_API_UNAVAILABLE_FOR_NEW_ORGANIZATION" in str(err.value)
        assert lf.counts[SCORES] == 1 and lf.counts[SCORES_V3] == 0

    with fake(v4=False) as lf:  # self-hosted Langfuse v3
        shapes = record_three_shapes(lf)
        with pytest.raises(LangfuseError) as err:
            run(lf.settings(api_version="v4"))
        assert err.value.status_code == 404
        records, ext = run(lf.settings())
        assert ext.api == "v3" and len(records) == len(shapes) and lf.counts[OBSERVATIONS] == 0
        assert lf.counts[SCORES_V3] == 1  # only the forced run's
        # a state that says v4 (say the server was rolled back): one 404, back to v3 for good
        records, ext = run(lf.settings(), ExtractState(api_version="v4"))
        assert ext.api == "v3" and ext.stats["api_switches"] == 1 and len(records) == len(shapes)
        assert lf.counts[SCORES_V3] == 2 and ext.next_state().api_version == "v3"

    with fake(legacy="events_only", v4=False) as lf:  # nothing answers: one clear error, no loop
        with pytest.raises(LangfuseError, match="serves neither read API: v3 answered HTTP 404, v4 HTTP 404"):
            run(lf.settings())
        assert (lf.counts[SCORES], lf.counts[SCORES_V3]) == (1, 1)


def quirky(lf: FakeLangfuse, start: datetime, n: int, tag: str) -> set[str]:
    """``n`` thumbs in tied groups of three (one timestamp each), with rows the server drops
    (``broken``): four newer than all (an empty first page at page size 4) and two inside (a
    short page). Returns the ids a client can read."""
    good = set()
    for i in range(n):
        ts = start + timedelta(seconds=10 * (i // 3))
        tid = lf.add_trace(ts - timedelta(minutes=2), f"{tag} q{i}", f"{tag} a{i}", ingested_at=OLD)
        good.add(lf.add_score(tid, i % 2, ts, ingested_at=OLD))
    newest = start + timedelta(seconds=10 * (n // 3) + 10)
    for ts in [newest] * 4 + [start + timedelta(seconds=25)] * 2:
        tid = lf.add_trace(ts - timedelta(minutes=2), "broken q", "broken a", ingested_at=OLD)
        lf.add_score(tid, 1, ts, ingested_at=OLD, broken=True)
    return good


@pytest.mark.parametrize("api", ["v3", "v4"])
@pytest.mark.parametrize("mode", ["list", "get"])
def test_short_and_empty_pages_and_tied_timestamps_lose_nothing_over_two_runs(tmp_path, api, mode):
    """No thumb skipped, none read twice, and the watermark only where every score before it was
    read. The legacy server orders ties differently on every query (ORDER BY timestamp only)."""
    path = tmp_path / "state.json"
    with fake(legacy="ok", unstable_ties=True) as lf:
        first = quirky(lf, T0 - timedelta(minutes=40), 23, "first")
        settings = lf.settings(api_version=api, trace_fetch=mode, page_size=4, overlap_minutes=15)
        records, ext = run(settings, load_state(path))
        ids = [r["score_id"] for r in records]
        assert len(ids) == len(set(ids)) and set(ids) == first
        save_state(path, ext.next_state())
        assert load_state(path).watermark == T0

        second = quirky(lf, T0 - timedelta(minutes=5), 14, "second")  # inside the overlap, ties with nothing old
        second |= quirky(lf, T0 + timedelta(minutes=1), 7, "third")
        records, ext = run(settings, load_state(path), now=T0 + timedelta(minutes=10))
    ids = [r["score_id"] for r in records]
    assert len(ids) == len(set(ids)) and set(ids) == second
    assert ext.api == api and ext.next_state().watermark == T0 + timedelta(minutes=10)


def test_json_text_is_parsed_as_langfuse_does():
    assert json_text('[{"role": "user", "content": "hi"}]') == [{"role": "user", "content": "hi"}]
    assert json_text("plain answer") == "plain answer" and json_text('"quoted"') == "quoted"
    assert json_text("42") == "42" and json_text("true") == "true"  # bare scalars stay the text sent
    assert json_text(None) is None and json_text({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("mode", ["list", "get"])
def test_v4_environment_filter_travels_as_the_server_wants_it(mode):
    """v3 scores take ``environment=a,b`` (a repeated key is a 400 there); observations take either."""
    with fake(legacy="gone", cloud=True) as lf:
        want = set()
        for i, env in enumerate(["production", "staging", "default", "production"]):
            t = T0 - timedelta(minutes=30 - i)
            tid = lf.add_trace(t, f"q{i}", f"a{i}", environment=env, ingested_at=OLD)
            sid = lf.add_score(tid, 1, t + timedelta(seconds=5), environment=env, ingested_at=OLD)
            if env != "default":
                want.add(sid)
        records, ext = run(lf.settings(api_version="v4", trace_fetch=mode, environment=("production", "staging")))
    assert {r["score_id"] for r in records} == want and ext.mode == mode
    assert all(status == 200 for _, _, status, _ in lf.log)


def test_v4_score_visible_before_its_trace_comes_next_run_exactly_once(tmp_path):
    """v3 scores are read without a trace JOIN (unlike the legacy route): a thumb can be listed
    while its trace's observations still lag. It is not handed out half, nor lost: the next run,
    inside the overlap, hands it out once."""
    path = tmp_path / "state.json"
    with fake(legacy="gone", cloud=True) as lf:
        record_three_shapes(lf)
        late_trace = lf.add_trace(T0 - timedelta(minutes=6), "late q", "late a")  # ingested now: lagging
        late = lf.add_score(late_trace, 1, T0 - timedelta(minutes=5), ingested_at=OLD)
        lf.lag_s = 60
        records, ext = run(lf.settings(), load_state(path))
        assert late not in {r["score_id"] for r in records} and len(records) == 4
        assert ext.stats["missing_traces"] == 1
        save_state(path, ext.next_state())
        lf.lag_s = 0
        for minutes, expected in ((10, [late]), (20, [])):
            records, ext = run(lf.settings(), load_state(path), now=T0 + timedelta(minutes=minutes))
            assert [r["score_id"] for r in records] == expected
            save_state(path, ext.next_state())


@pytest.mark.parametrize("flags", ["neither", "scores only"])
def test_a_server_keeping_its_v4_routes_off_fails_naming_its_flags_before_any_output(data_dir, monkeypatch, flags):
    """Self-hosted Langfuse v3.179.x in events_only mode (fake_langfuse: ``scores_v3_api``,
    ``preview_opt_in``): its legacy routes 404, and so do its v4 routes until the operator sets
    their flags on the server. The ETL stops with one InputError (the CLI prints it, no traceback)
    naming the status codes and what to set, and leaves no run folder and no watermark."""
    from irsflow.errors import InputError
    from irsflow.feedback.etl import FeedbackSettings, feedback_dir, run_etl, state_path

    scores_on = flags == "scores only"
    with fake(legacy="events_only", scores_v3_api=scores_on, preview_opt_in=False) as lf:
        record_three_shapes(lf)
        for name, value in (
            ("LANGFUSE_HOST", lf.url),
            ("LANGFUSE_PUBLIC_KEY", lf.public_key),
            ("LANGFUSE_SECRET_KEY", lf.secret_key),
        ):
            monkeypatch.setenv(name, value)
        with pytest.raises(InputError) as err:
            run_etl(FeedbackSettings(langfuse={"backoff_s": 0.01}), "r1", now=T0)
    text = str(err.value)
    if scores_on:  # scores read, then the first observations request: the opt-in alone is named
        assert "HTTP 404 on GET /api/public/v2/observations" in text
        assert "LANGFUSE_ENABLE_SCORES_V3_API" not in text
        assert (lf.counts[SCORES], lf.counts[SCORES_V3], lf.counts[OBSERVATIONS]) == (1, 1, 1)
    else:
        assert "serves neither read API: v3 answered HTTP 404, v4 HTTP 404" in text
        assert "LANGFUSE_ENABLE_SCORES_V3_API=true" in text and "events_only" in text
        assert (lf.counts[SCORES], lf.counts[SCORES_V3], lf.counts[OBSERVATIONS]) == (1, 1, 0)  # no loop
    assert "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true" in text and "restart" in text
    assert lf.secret_key not in text and lf.public_key not in text
    assert not state_path().exists() and not any(feedback_dir().glob("*")), "nothing written"
