"""The teacher in the loop, through Prefect, against an OpenAI-compatible server on 127.0.0.1:
IRS scoring with the `teacher` and fused `rlaif` rewards, the teacher-labelling subflow over a job
and over a samples file (failures, 429s, conflicts, reruns that make no calls), `irsflow inspect`,
the quality check of gold/red-team references, the prompt-set builder, and the key nowhere.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/flows/test_teacher_labelling.py -x
"""

from __future__ import annotations

import csv
import hashlib
import json
import os

import httpx
import pytest

from irsflow.dataset import load_questions
from irsflow.errors import InputError
from irsflow.jobs.job import create_job
from irsflow.labelling.quality import PromptSource, build_prompt_set
from irsflow.store import read_jsonl
from tests.support.fake_openai import FakeOpenAI
from tests.support.jobs import tiny_request

KEY = "sk-teacher-SECRET-42c0ffee99"


THROTTLED: set[str] = set()


def _user(req: dict) -> str:
    return req["messages"][1]["content"]


def route(req: dict) -> dict | None:
    """Per-answer replies: a score derived from the answer's hash (deterministic whatever the order),
    and marked answers for the failure cases."""
    text = _user(req)
    answer = text.split("ANSWER:\n", 1)[1].removesuffix("\n")  # the template ends with a newline
    if "MARK-DANGER" in answer:
        return {
            "kind": "ok",
            "score": 0.05,
            "safety_flag": True,
            "comment": "Misses the emergency entirely.",
            "best_answer": "Call 911 now: chest pain with sweating can be a heart attack.",
        }
    if "MARK-BROKEN" in answer:
        return {"kind": "invalid"}
    if "MARK-THROTTLE-ONCE" in answer and answer not in THROTTLED:
        THROTTLED.add(answer)
        return {"kind": "status", "status": 429, "retry_after": "0.3"}
    if "MARK-FLAWED-REF" in answer:
        return {"kind": "ok", "score": 0.2, "safety_flag": True, "comment": "Unsafe reference."}
    score = int(hashlib.sha256(answer.encode()).hexdigest()[:4], 16) % 100 / 100
    return {"kind": "ok", "score": score, "safety_flag": False, "comment": f"hash score {score:.2f}"}


@pytest.fixture(scope="module")
def teacher_env(prefect_server, tmp_path_factory):
    data = tmp_path_factory.mktemp("teacherdata")
    saved = {k: os.environ.get(k) for k in ("IRSFLOW_DATA_DIR", "DEEPSEEK_API_KEY", "IRSFLOW_TEACHER_API_KEY")}
    os.environ["IRSFLOW_DATA_DIR"] = str(data)
    os.environ["DEEPSEEK_API_KEY"] = KEY
    os.environ.pop("IRSFLOW_TEACHER_API_KEY", None)
    with FakeOpenAI(api_key=KEY) as srv:
        srv.route = route
        teacher = {
            "base_url": srv.base_url,
            "backoff_s": 0.01,
            "max_retries": 2,
            "max_tokens": 64,
            "max_wait_s": 2.0,
            "budget_usd": 5.0,
        }
        yield srv, data, teacher
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def teacher_job(teacher_env, tiny_model):
    srv, data, teacher = teacher_env
    from flows.train import train_job

    req = tiny_request(
        tiny_model,
        n_questions=4,
        seed=5,
        teacher=teacher,
        irs_config={
            "n_iterations": 1,
            "n_candidates": 3,
            "max_new_tokens": 16,
            "dw_config": {"initial_weights": {"conc": 0.5, "rlaif": 1.0, "teacher": 0.5}},
        },
    )
    store = create_job(req)
    calls_before = srv.count
    train_job(request=req, job_id=store.job_id)
    return store, srv.count - calls_before


def test_irs_scoring_uses_the_teacher_and_the_fused_reward(teacher_job, teacher_env):
    store, calls = teacher_job
    cands = read_jsonl(store.phase_dir(1) / "candidates.jsonl")
    distinct = {(r["question"], c["text"], r["context"]) for r in cands for c in r["candidates"]}
    assert calls == len(distinct)  # one call per distinct (prompt, answer, context); `rlaif` reuses the cache
    scores = read_jsonl(store.phase_dir(1) / "scores.jsonl")
    for r, s in zip(cands, scores):
        for c, rw in zip(r["candidates"], s["rewards"]):
            expected = int(hashlib.sha256(c["text"].encode()).hexdigest()[:4], 16) % 100 / 100
            assert rw["teacher"] == pytest.approx(expected)
            assert rw["rlaif"] is not None
    summary = json.loads((store.phase_dir(1) / "score_summary.json").read_text())
    assert set(summary["reward_breakdown"]) == {"conc", "rlaif", "teacher"}
    conflicts = read_jsonl(store.phase_dir(1) / "teacher_conflicts.jsonl")
    assert summary["teacher_conflicts"] == len(conflicts)
    for c in conflicts:  # the random tiny model never writes <think>: rules low, so conflicts = high teacher
        assert c["gap"] > 0.4 and c["teacher_score"] > 0.4 and c["comment"].startswith("hash score")
    usage = list(csv.DictReader(open(store.dir / "teacher_usage.csv")))
    assert sum(int(u["calls"]) for u in usage) == calls and float(usage[0]["cost_usd"]) > 0
    assert len(usage) == 1  # `teacher` and `rlaif` share one judging pass over the batch


def test_labelling_a_job_reuses_the_scoring_judgements(teacher_job, teacher_env, prefect_server):
    store, _ = teacher_job
    srv, _, _ = teacher_env
    from flows.teacher_labelling import teacher_labelling

    before = srv.count
    state = teacher_labelling(job_id=store.job_id, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert srv.count == before  # the chosen answers were judged while scoring: all cache hits
    samples = read_jsonl(store.samples_path)
    labels = read_jsonl(store.dir / "teacher" / "teacher_labels.jsonl")
    assert [r["id"] for r in labels] == [f"1:{s['id']}" for s in samples]
    assert summary["teacher_ok"] == len(samples) and summary["items"] == len(samples)
    exported = read_jsonl(store.dir / "teacher" / "teacher_judgements.jsonl")
    # the samples' own ids, in order (not batch positions, nor the ids the scoring phase judged under)
    assert [(e["id"], e["answer"], e["status"]) for e in exported] == [
        (f"1:{s['id']}", s["chosen"], "ok") for s in samples
    ]
    arts = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(state.state_details.flow_run_id)]}}},
    ).json()
    (art,) = [a for a in arts if a["type"] == "markdown"]
    assert art["key"] == f"job-{store.job_id}-teacher".lower() and "## Samples" in art["data"]


def test_samples_file_failures_retries_conflicts_and_a_free_rerun(teacher_env, tmp_path, prefect_server):
    srv, data, teacher = teacher_env
    from flows.teacher_labelling import teacher_labelling
    from irsflow.teacher import TeacherConfig

    think = (
        "<think>Chest pain with sweating may be cardiac; age, radiation to the arm, breathlessness and "
        "duration matter, so urgent assessment is the safe course.</think> "
    )
    rows = [
        {"id": "good", "prompt": "I have chest pain and I'm sweating", "answer": think + "Call 911 now. MARK-DANGER"},
        {"id": "broken", "prompt": "How do I treat a cold?", "answer": "Rest. MARK-BROKEN"},
        {
            "id": "plain",
            "prompt": "My 5 year-old has a fever",
            "answer": "Give her aspirin and fluids. MARK-THROTTLE-ONCE",
        },
        {"id": "zh", "prompt": "孩子胸痛怎么办", "answer": "<think>胸痛可能很严重需要评估</think>请立即就医。"},
    ]
    samples = tmp_path / "answers.jsonl"
    samples.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    before = srv.count
    out = tmp_path / "labels"
    state = teacher_labelling(
        samples=str(samples), teacher=TeacherConfig(**teacher), out_dir=str(out), return_state=True
    )
    assert state.is_completed(), state
    first = srv.count - before
    # 3 judged once + one 429 for "plain" (retried after Retry-After) + "broken" tried 1 + max_retries
    # times, then recorded as failed
    assert first == 3 + 1 + 3
    plain = [t for r, t in zip(srv.requests[before:], srv.times[before:]) if "MARK-THROTTLE-ONCE" in _user(r)]
    assert len(plain) == 2 and plain[1] - plain[0] >= 0.3
    labels = {r["id"]: r for r in read_jsonl(out / "teacher_labels.jsonl")}
    assert labels["broken"]["teacher_status"] == "invalid_json" and labels["broken"]["teacher_score"] is None
    assert labels["broken"]["rlaif"] is not None  # the rules still score it; the teacher abstains
    assert labels["plain"]["risk_hits"] == ["aspirin_for_child"] and labels["plain"]["risk"] == 1.0
    assert labels["good"]["chain"] == 1.0 and labels["good"]["emergency"] == 1.0
    (conflict,) = read_jsonl(out / "teacher_conflicts.jsonl")
    assert conflict["id"] == "good" and conflict["teacher_score"] == 0.05 and conflict["rules_score"] == 1.0
    assert conflict["comment"] == "Misses the emergency entirely." and conflict["best_answer"].startswith("Call 911")
    md = (out / "inspect_report.md").read_text()
    assert "### `good`: conflict and safety flag" in md and "Call 911 now: chest pain" in md
    assert len(list(csv.DictReader(open(out / "inspect_report.csv")))) == 4
    usage = list(csv.DictReader(open(out / "teacher_usage.csv")))
    assert (usage[-1]["calls"], usage[-1]["failures"], usage[-1]["ok"]) == (str(first), "1", "3")

    judged = {r["id"]: r for r in read_jsonl(out / "teacher_judgements.jsonl")}
    assert judged["broken"]["status"] == "invalid_json" and judged["broken"]["teacher_score"] is None
    assert judged["broken"]["reply"] == {"raw": "{not json"} and judged["good"]["teacher_score"] == 0.05

    before = srv.count  # rerun: the verdicts and the judge's invalid reply are cached: zero calls
    teacher_labelling(samples=str(samples), teacher=TeacherConfig(**teacher), out_dir=str(out))
    assert srv.count - before == 0
    usage = list(csv.DictReader(open(out / "teacher_usage.csv")))
    assert (usage[-1]["cache_hits"], usage[-1]["calls"], usage[-1]["invalid_json"]) == ("4", "0", "1")
    assert labels == {r["id"]: r for r in read_jsonl(out / "teacher_labels.jsonl")}

    # the key: nowhere in the files written, the run's parameters, logs or artifacts
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    run_id = str(state.state_details.flow_run_id)
    seen = [p.read_bytes().decode("utf-8", "replace") for root in (data, out) for p in root.rglob("*") if p.is_file()]
    seen.append(httpx.get(f"{prefect_server}/flow_runs/{run_id}").text)
    seen.append(httpx.post(f"{prefect_server}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}).text)
    seen.append(
        httpx.post(f"{prefect_server}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).text
    )
    assert "teacher-answers" in seen[-1] and "failed" in seen[-2]
    assert not [s for s in seen if KEY in s]


def test_a_teacher_outage_fails_the_scoring_phase(teacher_job, teacher_env):
    store, _ = teacher_job
    from irsflow.config import TrainRequest
    from irsflow.loop.phases import run_score
    from irsflow.retry import failure_kind
    from irsflow.teacher import TeacherUnavailable

    req = TrainRequest.model_validate(store.read_config()["request"])
    scores = (store.phase_dir(1) / "scores.jsonl").read_bytes()
    with FakeOpenAI(api_key=KEY, default={"kind": "status", "status": 503}) as down:
        dead = req.model_copy(
            update={
                "teacher": req.teacher.model_copy(
                    update={"base_url": down.base_url, "model": "deepseek-v4-pro", "max_retries": 0}
                )
            }
        )  # a new model: no cache hit
        with pytest.raises(TeacherUnavailable) as err:
            run_score(store, dead, 1, dict(req.shared.dw_config.initial_weights), [], teacher_api_key=KEY)
    assert err.value.failed == err.value.total == down.count > 0 and failure_kind(err.value) == "transient"
    assert (store.phase_dir(1) / "scores.jsonl").read_bytes() == scores  # nothing scored on rules alone


def test_bad_samples_fail_before_any_call(teacher_env, tmp_path):
    srv, _, teacher = teacher_env
    from flows.teacher_labelling import teacher_labelling
    from irsflow.teacher import TeacherConfig

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "q", "answer": "x"}\n{"id": "b", "prompt": "", "answer": "y"}\n')
    before = srv.count
    with pytest.raises(InputError, match=r"bad.jsonl:2: needs a non-empty string 'prompt'"):
        teacher_labelling(samples=str(bad), teacher=TeacherConfig(**teacher))
    with pytest.raises(InputError, match="exactly one of job_id or samples"):
        teacher_labelling()
    assert srv.count == before


def test_inspect_reads_the_cache_and_calls_nothing(teacher_job, teacher_env, prefect_server, capsys):
    store, _ = teacher_job
    srv, _, _ = teacher_env
    from cli.main import main

    before = srv.count
    assert main(["inspect", store.job_id]) == 0
    out = json.loads(capsys.readouterr().out)
    assert srv.count == before
    samples = read_jsonl(store.samples_path)
    assert out["items"] == len(samples) and out["teacher_ok"] == len(samples) and out["teacher_missing"] == 0
    rows = list(csv.DictReader(open(out["report_csv"])))
    assert [r["answer"] for r in rows] == [s["chosen"] for s in samples]
    assert all(r["teacher_score"] and r["comment"].startswith("hash score") for r in rows)
    arts = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [f"job-{store.job_id}-inspect".lower()]}}},
    ).json()
    assert arts and arts[0]["data"].startswith(f"# Inspection of job {store.job_id}")


def test_quality_check_flags_bad_references(teacher_env, tmp_path):
    srv, _, teacher = teacher_env
    from flows.teacher_labelling import teacher_quality_check
    from irsflow.teacher import TeacherConfig

    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        json.dumps({"id": "g1", "question": "My 2 year-old has a fever", "reference": "Give him aspirin."})
        + "\n"
        + json.dumps({"id": "g2", "question": "What helps a cold?", "reference": "Rest. MARK-FLAWED-REF"})
        + "\n"
        + json.dumps({"id": "g3", "question": "I have chest pain", "reference": "Drink some tea."})
        + "\n"
        + json.dumps({"id": "g4", "question": "No reference here"})
        + "\n"
    )
    out = tmp_path / "qc"
    s = teacher_quality_check(
        sets={"gold": str(gold), "red": "builtin:redteam"},
        teacher=TeacherConfig(**teacher),
        score_floor=0.0,
        out_dir=str(out),
    )
    assert s["items"] == 3 + 12 and s["skipped_without_reference"] == 1
    flagged = {r["id"]: r["reasons"] for r in read_jsonl(out / "qc_flagged.jsonl")}
    assert flagged["gold:g1"] == ["rules: risk pattern aspirin_for_child"]
    assert flagged["gold:g2"] == ["teacher: safety flag"]
    assert flagged["gold:g3"] == ["rules: red flag chest_pain without urgent care"]
    assert not [k for k in flagged if k.startswith("red:")]  # the shipped red-team references pass the rules
    assert "gold:g2" in (out / "qc_report.md").read_text()


def test_prompt_set_keeps_the_red_team_share(tmp_path):
    sources = [
        PromptSource("builtin:demo"),
        PromptSource("builtin:gold"),
        PromptSource("builtin:redteam", high_risk=True),
    ]
    rows = build_prompt_set(sources, n=25, min_high_risk_share=0.4, seed=7, out=tmp_path / "p.jsonl")
    assert len(rows) == 25 and sum(r["meta"]["high_risk"] for r in rows) >= 10
    assert len({r["question"] for r in rows}) == 25
    assert [q.id for q in load_questions(str(tmp_path / "p.jsonl"))] == [r["id"] for r in rows]  # a question set
    again = build_prompt_set(sources, n=25, min_high_risk_share=0.4, seed=7)
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    # a general set whose questions raise red flags counts them as high-risk
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(
            json.dumps({"id": i, "question": q}) + "\n"
            for i, q in enumerate(
                ["I have chest pain", "Why is the sky blue?", "My throat is swelling after a sting", "Best tea?"]
            )
        )
    )
    rows = build_prompt_set([PromptSource(str(mixed))], n=4, min_high_risk_share=0.5)
    assert sorted(r["meta"]["flags"] for r in rows if r["meta"]["high_risk"]) == [["anaphylaxis"], ["chest_pain"]]
    with pytest.raises(InputError, match="10 high-risk prompts needed .* only 2 available"):
        build_prompt_set([PromptSource(str(mixed)), PromptSource("builtin:demo")], n=25, min_high_risk_share=0.4)


def test_key_from_a_secret_block_and_a_missing_key_fails_before_generation(
    teacher_env, tiny_model, tmp_path, monkeypatch
):
    srv, _, teacher = teacher_env
    from prefect.blocks.system import Secret

    from flows.teacher_labelling import teacher_labelling
    from flows.train import train_job
    from irsflow.errors import ConfigError
    from irsflow.teacher import TeacherConfig

    monkeypatch.delenv("DEEPSEEK_API_KEY")
    req = tiny_request(
        tiny_model,
        n_questions=2,
        teacher=teacher,
        irs_config={"n_iterations": 1, "dw_config": {"initial_weights": {"conc": 0.5, "rlaif": 1.0}}},
    )
    store = create_job(req)
    with pytest.raises(ConfigError, match="teacher.api_key: not set .*teacher-api-key"):
        train_job(request=req, job_id=store.job_id)
    assert not (store.phase_dir(1) / "candidates.jsonl").exists()  # failed before any model loaded

    Secret(value=KEY).save("teacher-api-key", overwrite=True)
    try:
        samples = tmp_path / "one.jsonl"
        samples.write_text(json.dumps({"id": "x", "prompt": "Is tea healthy?", "answer": "In moderation, yes."}) + "\n")
        before = srv.count
        s = teacher_labelling(samples=str(samples), teacher=TeacherConfig(**teacher), out_dir=str(tmp_path / "o"))
        assert s["teacher_ok"] == 1 and srv.count == before + 1
    finally:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            doc = client.read_block_document_by_name("teacher-api-key", block_type_slug="secret")
            client.delete_block_document(doc.id)


def test_a_labelling_run_fails_only_when_nothing_was_judged_and_says_whether_a_retry_helps():
    from irsflow.retry import failure_kind
    from irsflow.teacher import TeacherRepliesUnusable, TeacherUnavailable
    from tasks.teacher import _check

    some_ok = {"items": 3, "teacher_ok": 1, "teacher_failed": 2, "teacher_statuses": {"ok": 1, "failed": 2}}
    assert _check(some_ok) is some_ok  # failures are recorded per item in the report
    down = {"items": 2, "teacher_ok": 0, "teacher_failed": 2, "teacher_statuses": {"failed": 1, "truncated": 1}}
    with pytest.raises(TeacherUnavailable) as err:
        _check(down)
    assert err.value.failed == 2 and err.value.by_status == {"failed": 1, "truncated": 1}
    assert failure_kind(err.value) == "transient"
    unusable = {"items": 2, "teacher_ok": 0, "teacher_failed": 2, "teacher_statuses": {"truncated": 2}}
    with pytest.raises(TeacherRepliesUnusable):  # asking again returns the same: not retried
        _check(unusable)
