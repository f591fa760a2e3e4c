"""The feedback ETL end to end through Prefect against a Langfuse-compatible server on 127.0.0.1:
outputs and manifest, bad traces counted not fatal, a second run with nothing new writes nothing,
a late score inside the overlap window lands once, Label Studio corrections come back as golden
rows, pairs and draft codebook rules (each taken once, an edited one replaced, empty or unchanged
ones counted), a bad export or codebook fails the run before any folder lands, and the keys never
reach files, parameters, logs or artifacts. The round trip against a real Label Studio server:
test_label_studio_real.py."""

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from irsflow.codebook.store import Codebook
from irsflow.errors import InputError
from irsflow.feedback.corrections import store_dir
from irsflow.feedback.etl import FeedbackSettings, feedback_dir, run_etl, state_path
from irsflow.feedback.label_studio import FROM_NAME, TO_NAME
from irsflow.store import read_jsonl
from tests.support.fake_langfuse import FakeLangfuse

NOW = datetime.now(UTC)
SETTINGS = FeedbackSettings(
    langfuse={"score_data_type": "CATEGORICAL", "up_values": ["up"], "down_values": ["down"], "overlap_minutes": 15}
)


def chat(q):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]


@pytest.fixture()
def langfuse(monkeypatch, data_dir, prefect_server):
    with FakeLangfuse() as lf:
        monkeypatch.setenv("LANGFUSE_HOST", lf.url)
        monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", lf.public_key)
        monkeypatch.setenv("LANGFUSE_SECRET_KEY", lf.secret_key)
        t = NOW - timedelta(hours=2)
        for tid, q, a, label in [
            ("t1", "Capital of France?", "Paris.", "up"),
            ("t2", "capital of france?", "Lyon.", "down"),
            ("t3", "2+2?", "5", "down"),
            ("t4", "Hi?", None, "up"),
            ("t5", 42, "x", "up"),
            ("t6", "Weather?", "Sunny.", "meh"),
        ]:
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
    with pytest.raises(InputError, match=f"label studio export {broken}: not readable JSON"):
        run(label_studio_export=str(broken))  # refused before any request: nothing written, nothing read
    assert not feedback_dir().exists() and langfuse.counts["/api/public/v2/scores"] == 0
    first = run()
    rid = first["run_id"]
    assert first["written"] and first["counts"]["records"] == 6
    assert first["files"] | {} == {
        "sft.messages.jsonl": 1,
        "sft.sharegpt.jsonl": 1,
        "sft.alpaca.jsonl": 1,
        "annotation_queue.jsonl": 2,
        "label_studio_tasks.json": 2,
        "pairs.jsonl": 1,
        "golden.messages.jsonl": 0,
    }
    skipped = first["skipped"]
    assert skipped.pop("no output") == 1 and skipped.pop("non-chat input") == 1
    assert skipped.pop("unknown score value") == 1 and not skipped
    assert rows(rid, "sft.messages.jsonl")[0]["trace_id"] == "t1"
    assert rows(rid, "pairs.jsonl")[0] | {} == {
        "prompt": chat("Capital of France?"),
        "chosen": "Paris.",
        "rejected": "Lyon.",
        "source": "thumbs",
        "chosen_trace_id": "t1",
        "rejected_trace_id": "t2",
    }
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


def annotate(task: dict, task_id: int, ann_id: int, text: str, updated_at: str, **extra) -> dict:
    """A task as Label Studio's JSON export shows it once annotated (shape: label_studio/data_export
    serializers, ExportDataSerializer + AnnotationSerializer; seen on a real 1.23 server)."""
    return {
        **task,
        "id": task_id,
        "annotations": [
            {
                "id": ann_id,
                "completed_by": 1,
                "was_cancelled": False,
                "created_at": "2026-11-21T10:00:00.000000Z",
                "updated_at": updated_at,
                "result": [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "textarea",
                        "value": {"text": [text]},
                        "origin": "manual",
                    }
                ],
                **extra,
            }
        ],
    }


def test_label_studio_corrections_become_golden_rows_pairs_and_draft_rules(langfuse, tmp_path):
    first = run()
    tasks = rows(first["run_id"], "label_studio_tasks.json")
    t2, t3 = (next(t for t in tasks if t["data"]["trace_id"] == tid) for tid in ("t2", "t3"))
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            [
                annotate(t3, 31, 310, "2+2 is 4.", "2026-11-21T10:00:00.000000Z"),
                annotate(t2, 21, 210, "  \n ", "2026-11-21T10:01:00.000000Z"),
            ]
        )
    )
    second = run(label_studio_export=str(export))
    assert second["files"]["golden.messages.jsonl"] == 1 and second["files"]["pairs.jsonl"] == 1
    golden = rows(second["run_id"], "golden.messages.jsonl")[0]
    assert golden["messages"][-1] == {"role": "assistant", "content": "2+2 is 4."} and golden["trace_id"] == "t3"
    assert second["skipped"] == {"label studio: empty correction": 1}
    drafts = Codebook().rules(enabled_only=False)
    assert [(r.id, r.enabled) for r in drafts] == [("ls-31", False)]
    assert "2+2 is 4" in drafts[0].text and "2+2?" in drafts[0].examples


LS_ONLY = FeedbackSettings(langfuse_enabled=False)  # corrections alone: no Langfuse in these tests


def test_each_correction_is_taken_once_and_an_edit_replaces_it(data_dir, tmp_path):
    tasks = [
        {"data": {"messages": chat(q) + [{"role": "assistant", "content": a}], "trace_id": tid}}
        for tid, q, a in [
            ("a", "Capital of Peru?", "Quito."),
            ("b", "Boiling point of water?", "90 C."),
            ("c", "Largest ocean?", "The Pacific Ocean."),
            ("d", "Fastest land animal?", "Horse."),
        ]
    ]
    export = tmp_path / "export.json"

    def ingest(*annotated, run_id):
        export.write_text(json.dumps(list(annotated)))
        return run_etl(LS_ONLY, run_id, label_studio_export=export)

    a = annotate(tasks[0], 1, 11, "Lima.", "2026-11-21T10:00:00.000000Z")
    b = annotate(tasks[1], 2, 12, "100 C at sea level.", "2026-11-21T10:00:00.000000Z")
    same = annotate(tasks[2], 3, 13, "The  Pacific\nOcean. ", "2026-11-21T10:00:00.000000Z")
    cancelled = annotate(tasks[3], 4, 14, "Cheetah.", "2026-11-21T10:00:00.000000Z", was_cancelled=True)
    first = ingest(a, b, same, cancelled, run_id="w1")
    assert first["counts"]["corrections"] == 2 and first["codebook_drafts"] == 2
    assert first["skipped"] == {"label studio: correction same as the answer": 1, "label studio: cancelled": 1}

    # the export is cumulative: the same annotations again add nothing (no folder either), nor does
    # one submitted again unchanged (Label Studio gives it a new updated_at)
    b_resubmitted = annotate(tasks[1], 2, 12, "100 C at sea level.", "2026-11-21T11:00:00.000000Z")
    again = ingest(a, b_resubmitted, same, cancelled, run_id="w2")
    assert not again["written"] and again["skipped"]["label studio: already taken (not edited since)"] == 2
    assert not (feedback_dir() / "w2").exists()

    # b edited in Label Studio (same annotation id, newer updated_at): replaced, not added
    rule = Codebook().set_enabled("ls-2", True, note="reviewed")  # a reviewer had enabled its draft
    b2 = annotate(tasks[1], 2, 12, "100 degrees C at sea level.", "2026-11-22T09:00:00.000000Z")
    third = ingest(a, b2, same, cancelled, run_id="w3")
    assert third["counts"]["corrections"] == 1 and third["label_studio"]["replaces"] == {"2": "w1"}
    golden = read_jsonl(store_dir() / "golden.messages.jsonl")
    assert sorted((g["ls_annotation_id"], g["messages"][-1]["content"]) for g in golden) == [
        ("11", "Lima."),
        ("12", "100 degrees C at sea level."),
    ]
    assert sorted(p["chosen"] for p in read_jsonl(store_dir() / "pairs.jsonl")) == [
        "100 degrees C at sea level.",
        "Lima.",
    ]
    rules = {r.id: r for r in Codebook().rules(enabled_only=False)}
    assert sorted(rules) == ["ls-1", "ls-2"]
    assert "100 degrees C" in rules["ls-2"].text and rule.enabled and not rules["ls-2"].enabled, (
        "an edited correction's draft is re-drafted and goes back to review"
    )
    assert rules["ls-2"].provenance["ls_updated_at"] == "2026-11-22T09:00:00.000000Z"


def test_a_newer_annotation_of_a_corrected_task_replaces_its_row_pair_and_rule(data_dir, tmp_path, monkeypatch):
    """Another annotator (or a new annotation instead of an edit) on a task already corrected: one
    row, pair and draft rule per task, the latest annotation's (by updated_at), whatever its id."""
    for env in ("LANGFUSE_HOST", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(env, raising=False)
    peru = {
        "data": {"messages": chat("Capital of Peru?") + [{"role": "assistant", "content": "Quito."}], "trace_id": "tp"}
    }
    ocean = {
        "data": {"messages": chat("Largest ocean?") + [{"role": "assistant", "content": "Atlantic."}], "trace_id": "to"}
    }
    export = tmp_path / "export.json"

    def ingest(*tasks, run_id):
        export.write_text(json.dumps(list(tasks)))
        # Langfuse enabled (the default) but skipped: what the weekly cycle does without host/keys
        return run_etl(FeedbackSettings(), run_id, label_studio_export=export, skip_langfuse="no Langfuse host/keys")

    first = ingest(
        annotate(peru, 7, 70, "Lima.", "2026-11-21T10:00:00.000000Z"),
        annotate(ocean, 8, 80, "The Pacific.", "2026-11-21T10:00:00.000000Z"),
        run_id="w1",
    )
    assert first["counts"]["corrections"] == 2 and first["langfuse_skipped"] == "no Langfuse host/keys"
    assert first["host"] is None and first["window"] == [None, None]
    # a second annotator adds annotation 71 to task 7 later; the export lists both annotations
    both = annotate(peru, 7, 70, "Lima.", "2026-11-21T10:00:00.000000Z")
    both["annotations"].append(
        {
            **both["annotations"][0],
            "id": 71,
            "completed_by": 2,
            "created_at": "2026-11-23T08:00:00.000000Z",
            "updated_at": "2026-11-23T08:00:00.000000Z",
            "result": [{**both["annotations"][0]["result"][0], "value": {"text": ["Lima, Peru."]}}],
        }
    )
    ocean_again = annotate(ocean, 8, 80, "The Pacific.", "2026-11-21T10:00:00.000000Z")
    second = ingest(both, ocean_again, run_id="w2")
    assert second["counts"]["corrections"] == 1 and second["label_studio"]["replaces"] == {"7": "w1"}
    golden = read_jsonl(store_dir() / "golden.messages.jsonl")
    assert sorted((g["trace_id"], g["ls_annotation_id"], g["messages"][-1]["content"]) for g in golden) == [
        ("to", "80", "The Pacific."),
        ("tp", "71", "Lima, Peru."),
    ]
    pairs = read_jsonl(store_dir() / "pairs.jsonl")
    assert sorted((p["trace_id"], p["chosen"]) for p in pairs) == [("to", "The Pacific."), ("tp", "Lima, Peru.")]
    rules = {r.id: r for r in Codebook().rules(enabled_only=False)}
    assert sorted(rules) == ["ls-7", "ls-8"] and "Lima, Peru" in rules["ls-7"].text
    assert rules["ls-7"].provenance["ls_annotation_id"] == "71" and rules["ls-7"].provenance["trace_id"] == "tp"
    # the same export again adds nothing; the older annotation edited later wins back the task
    assert not ingest(both, ocean_again, run_id="w3")["written"]
    both["annotations"][0] |= {
        "updated_at": "2026-11-24T08:00:00.000000Z",
        "result": [{**both["annotations"][0]["result"][0], "value": {"text": ["Lima (Peru)."]}}],
    }
    fourth = ingest(both, ocean_again, run_id="w4")
    assert fourth["counts"]["corrections"] == 1 and fourth["label_studio"]["replaces"] == {"7": "w2"}
    assert sorted(g["messages"][-1]["content"] for g in read_jsonl(store_dir() / "golden.messages.jsonl")) == [
        "Lima (Peru).",
        "The Pacific.",
    ]
    assert len(read_jsonl(store_dir() / "pairs.jsonl")) == 2 and len(Codebook().rules(enabled_only=False)) == 2


def test_the_weekly_cycle_runs_the_etl_when_any_feedback_source_is_set():
    from irsflow.release.weekly import WeeklySettings, feedback_plan, report_markdown

    ls = {"label_studio": {"project_id": 3, "url": "http://127.0.0.1:1"}}
    no_keys = "no Langfuse host/keys configured"
    cases = [
        ({}, True, {"run": True, "skip_langfuse": None}),
        ({}, False, {"run": False, "skip_langfuse": no_keys}),
        ({"feedback": ls}, False, {"run": True, "skip_langfuse": no_keys}),
        ({"label_studio_export": "e.json"}, False, {"run": True, "skip_langfuse": no_keys}),
        ({"feedback": ls}, True, {"run": True, "skip_langfuse": None}),
        (
            {"feedback": {**ls, "langfuse_enabled": False}},
            True,
            {"run": True, "skip_langfuse": "feedback.langfuse_enabled is false"},
        ),
        (
            {"feedback": {"langfuse_enabled": False}},
            True,
            {"run": False, "skip_langfuse": "feedback.langfuse_enabled is false"},
        ),
    ]
    for doc, ready, want in cases:
        assert feedback_plan(WeeklySettings.model_validate(doc), langfuse_ready=ready) == want, (doc, ready)
    md = report_markdown(
        {
            "cycle_id": "r1",
            "outcome": "x",
            "came_in": {
                "etl_run": "r1",
                "traces": 0,
                "thumbs_up": 0,
                "thumbs_down": 0,
                "corrections": 1,
                "langfuse_skipped": no_keys,
                "label_studio_push": {"project": 3, "pushed": 2, "already_in_project": 5},
            },
            "served": {},
            "cost": {"teacher_calls": 0, "teacher_usd": 0.0, "gpu_minutes": 0.0},
        }
    )
    assert f"Langfuse not read: {no_keys}." in md and "project 3: 2 new correction tasks pushed, 5 already there" in md


def test_a_failed_etl_leaves_no_extra_run_folder(data_dir, tmp_path):
    t3 = {"data": {"messages": chat("2+2?") + [{"role": "assistant", "content": "5"}], "trace_id": "t3"}}
    export = tmp_path / "export.json"
    export.write_text(json.dumps([annotate(t3, 31, 310, "4.", "2026-11-21T10:00:00.000000Z")]))
    # 1. a codebook that cannot take the draft fails the run before its folder lands
    data_dir.mkdir(parents=True)
    (data_dir / "codebook.sqlite").write_text("not a database")
    for attempt in range(2):
        with pytest.raises(InputError, match="codebook.path"):
            run_etl(LS_ONLY, f"r{attempt}", label_studio_export=export)
    assert not feedback_dir().exists() or not list(feedback_dir().iterdir())
    assert not state_path().exists() and not store_dir().exists()
    (data_dir / "codebook.sqlite").unlink()
    done = run_etl(LS_ONLY, "r2", label_studio_export=export)
    assert done["written"] and done["counts"]["corrections"] == 1 and done["codebook_drafts"] == 1
    # 2. the process died after its folder landed, before the store and the watermark moved:
    #    the next run heals from that folder and writes nothing new
    import shutil

    shutil.rmtree(store_dir())
    state_path().unlink()
    for f in data_dir.glob("codebook.sqlite*"):
        f.unlink()
    healed = run_etl(LS_ONLY, "r3", label_studio_export=export)
    assert not healed["written"] and healed["skipped"] == {"label studio: already taken (not edited since)": 1}
    assert sorted(p.name for p in feedback_dir().iterdir() if p.is_dir()) == ["r2"]
    assert [g["ls_annotation_id"] for g in read_jsonl(store_dir() / "golden.messages.jsonl")] == ["310"]
    assert [r.id for r in Codebook().rules(enabled_only=False)] == ["ls-31"]


def test_a_json_min_export_is_refused_naming_the_format(data_dir, tmp_path):
    # label-studio-sdk converter.py convert_to_json_min: data keys and control values flattened
    export = tmp_path / "min.json"
    export.write_text(
        json.dumps(
            [
                {
                    "id": 31,
                    "messages": chat("2+2?"),
                    "answer": "5",
                    "trace_id": "t3",
                    "corrected": "4.",
                    "annotator": 1,
                    "annotation_id": 310,
                    "created_at": "2026-11-21T10:00:00.000000Z",
                    "updated_at": "2026-11-21T10:00:00.000000Z",
                    "lead_time": 3.2,
                }
            ]
        )
    )
    with pytest.raises(InputError, match="JSON_MIN export format.*exportType=JSON"):
        run_etl(LS_ONLY, "m1", label_studio_export=export)
    assert not feedback_dir().exists()


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
    seen.append(
        httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}}).text
    )
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


def test_a_label_studio_key_in_settings_is_refused_and_never_echoed():
    from pydantic import ValidationError

    from irsflow.release.weekly import WeeklySettings

    for bad in (
        {"feedback": {"label_studio": {"project_id": 3, "api_key": "ls-secret-123"}}},
        {"feedback": {"langfuse": {"secret_key": "ls-secret-123"}}},
    ):
        with pytest.raises(ValidationError, match="keys do not belong in settings") as err:
            WeeklySettings.model_validate(bad)
        assert "ls-secret-123" not in str(err.value)
    with pytest.raises(ValidationError, match="not both"):
        WeeklySettings.model_validate(
            {"label_studio_export": "export.json", "feedback": {"label_studio": {"project_id": 3}}}
        )
