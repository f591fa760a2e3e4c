"""The feedback ETL end to end through Prefect against a Langfuse-compatible server on 127.0.0.1:
outputs and manifest, bad traces counted not fatal, a second run with nothing new writes nothing,
a late score inside the overlap window lands once, Label Studio corrections come back as golden
rows, pairs and draft codebook rules, and the keys never reach files, parameters, logs or artifacts."""
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from irsflow.codebook import Codebook
from irsflow.feedback.etl import FeedbackSettings, feedback_dir, state_path
from irsflow.feedback.label_studio import FROM_NAME, TO_NAME
from tests.fake_langfuse import FakeLangfuse

NOW = datetime.now(timezone.utc)
SETTINGS = FeedbackSettings(langfuse={"score_data_type": "CATEGORICAL", "up_values": ["up"],
                                      "down_values": ["down"], "overlap_minutes": 15})


def chat(q):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]


@pytest.fixture()
def langfuse(monkeypatch, data_dir, prefect_server):
    with FakeLangfuse() as lf:
        monkeypatch.setenv("LANGFUSE_HOST", lf.url)
        monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", lf.public_key)
        monkeypatch.setenv("LANGFUSE_SECRET_KEY", lf.secret_key)
        t = NOW - timedelta(hours=2)
        for tid, q, a, label in [("t1", "Capital of France?", "Paris.", "up"), ("t2", "capital of france?", "Lyon.", "down"),
                                 ("t3", "2+2?", "5", "down"), ("t4", "Hi?", None, "up"), ("t5", 42, "x", "up"),
                                 ("t6", "Weather?", "Sunny.", "meh")]:
            lf.add_trace(t, chat(q) if isinstance(q, str) else q, a, id=tid)
            lf.add_score(tid, label, t + timedelta(minutes=1), data_type="CATEGORICAL")
            t += timedelta(minutes=2)
        yield lf


def run(**kw):
    from flows.feedback_etl import feedback_etl

    return feedback_etl(settings=SETTINGS, **kw)


def rows(run_id, name):
    text = (feedback_dir() / run_id / name).read_text()
    return json.loads(text) if name.endswith(".json") else [json.loads(line) for line in text.splitlines()]


def test_etl_end_to_end_then_nothing_new_then_a_late_score(langfuse, tmp_path):
    broken = tmp_path / "export.json"
    broken.write_text("[{not json")
    first = run(label_studio_export=str(broken))
    rid = first["run_id"]
    assert first["written"] and first["counts"]["records"] == 6
    assert first["files"] | {} == {"sft.messages.jsonl": 1, "sft.sharegpt.jsonl": 1, "sft.alpaca.jsonl": 1,
                                   "annotation_queue.jsonl": 2, "label_studio_tasks.json": 2, "pairs.jsonl": 1,
                                   "golden.messages.jsonl": 0}
    skipped = first["skipped"]
    assert skipped.pop("no output") == 1 and skipped.pop("non-chat input") == 1
    assert skipped.pop("unknown score value") == 1
    (reason, n), = skipped.items()
    assert reason.startswith("label studio: broken export file") and n == 1
    assert rows(rid, "sft.messages.jsonl")[0]["trace_id"] == "t1"
    assert rows(rid, "pairs.jsonl")[0] | {} == {"prompt": chat("Capital of France?"), "chosen": "Paris.",
                                                "rejected": "Lyon.", "source": "thumbs", "chosen_trace_id": "t1",
                                                "rejected_trace_id": "t2"}
    manifest = json.loads((feedback_dir() / rid / "manifest.json").read_text())
    assert manifest["state_after"]["watermark"] and manifest["files"]["pairs.jsonl"]["sha256"]

    second = run()
    assert not second["written"] and second["counts"]["records"] == 0
    assert sorted(p.name for p in feedback_dir().iterdir() if p.is_dir()) == [rid]

    # thumbs given 5 minutes ago but only now readable (Langfuse's read lag): inside the overlap window
    langfuse.add_trace(NOW - timedelta(minutes=6), chat("Largest planet?"), "Jupiter.", id="t7")
    langfuse.add_score("t7", "up", NOW - timedelta(minutes=5), data_type="CATEGORICAL")
    third = run()
    assert third["written"] and third["counts"]["records"] == 1 and third["files"]["sft.messages.jsonl"] == 1
    assert run()["counts"]["records"] == 0, "the late score is taken once"


def test_label_studio_corrections_become_golden_rows_pairs_and_draft_rules(langfuse, tmp_path):
    first = run()
    tasks = rows(first["run_id"], "label_studio_tasks.json")
    t3 = next(t for t in tasks if t["data"]["trace_id"] == "t3")
    t3 |= {"id": 31, "annotations": [{"id": 310, "completed_by": 1, "was_cancelled": False,
                                      "updated_at": "2026-11-21T10:00:00Z", "result": [
                                          {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "textarea",
                                           "value": {"text": ["2+2 is 4."]}}]}]}
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    second = run(label_studio_export=str(export))
    assert second["files"]["golden.messages.jsonl"] == 1 and second["files"]["pairs.jsonl"] == 1
    golden = rows(second["run_id"], "golden.messages.jsonl")[0]
    assert golden["messages"][-1] == {"role": "assistant", "content": "2+2 is 4."} and golden["trace_id"] == "t3"
    assert second["skipped"] == {"label studio: not annotated": 1}
    drafts = Codebook().rules(enabled_only=False)
    assert [(r.id, r.enabled) for r in drafts] == [("ls-31-310", False)]
    assert "2+2 is 4" in drafts[0].text and "2+2?" in drafts[0].examples


def test_keys_never_reach_files_parameters_logs_or_artifacts(langfuse, monkeypatch, prefect_server):
    from prefect.blocks.system import Secret
    from prefect.logging.handlers import APILogHandler

    # from Prefect Secret blocks this time, not the environment
    Secret(value=langfuse.public_key).save("langfuse-public-key", overwrite=True)
    Secret(value=langfuse.secret_key).save("langfuse-secret-key", overwrite=True)
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY")
    monkeypatch.delenv("LANGFUSE_SECRET_KEY")
    from flows.feedback_etl import feedback_etl

    state = feedback_etl(settings=SETTINGS, return_state=True)
    assert state.is_completed(), state
    run_id = state.state_details.flow_run_id
    APILogHandler().flush()
    seen = [p.read_text(errors="replace") for p in feedback_dir().rglob("*") if p.is_file()]
    seen.append(state_path().read_text())
    api = prefect_server
    seen.append(httpx.get(f"{api}/flow_runs/{run_id}").text)
    seen.append(httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [str(run_id)]}}}).text)
    seen.append(httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}}).text)
    assert "feedback-etl-summary" in seen[-1]
    assert not [s for s in seen if langfuse.secret_key in s or langfuse.public_key in s]
    with pytest.raises(Exception, match="LANGFUSE_SECRET_KEY"):  # a bad key is named, never shown
        monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-wrong")
        monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-wrong")
        feedback_etl(settings=SETTINGS)


def test_a_crash_loses_nothing_and_duplicates_nothing(langfuse):
    from irsflow.feedback.etl import run_etl

    quick = SETTINGS.model_copy(update={"langfuse": {**SETTINGS.langfuse, "max_retries": 1, "backoff_s": 0}})
    # 1. the server fails past every retry mid-extraction: no run folder, no watermark
    langfuse.fail_next("/api/public/v2/scores", 500, times=2)  # = max_retries + 1 attempts
    with pytest.raises(Exception, match="500"):
        run_etl(quick, "r1")
    assert not (feedback_dir() / "r1").exists() and not state_path().exists()
    # 2. outputs landed but the process died before the watermark moved: the next run heals it
    first = run_etl(quick, "r1")
    assert first["written"] and first["counts"]["records"] == 6
    state_path().write_text(json.dumps({"watermark": None, "recent_ids": {}}))
    again = run_etl(quick, "r2")
    assert not again["written"] and again["counts"]["records"] == 0
    assert [p.name for p in feedback_dir().iterdir() if p.is_dir()] == ["r1"]
    assert again["state_before"] == first["state_after"], "healed from r1's manifest before extracting"
    assert json.loads(state_path().read_text())["watermark"] >= first["state_after"]["watermark"]
    # 3. a retried run with the same run id does not run twice
    assert run_etl(quick, "r1")["written"] is False
