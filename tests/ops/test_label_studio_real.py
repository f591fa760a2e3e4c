"""The Label Studio round trip against a real server: PyPI ``label-studio`` in its own virtualenv
(``infra/install_label_studio.sh``; skips naming why where it is not installed, fails under CI),
started once per session on 127.0.0.1 with a user and a legacy API token from the environment.

A project with our labelling config; tasks pushed with the CLI (twice: the second push adds
nothing); annotations created (and one edited, one task annotated a second time) through the REST
API as an annotator's browser does; the export pulled with the CLI and ingested: each correction
taken once, an edit or a newer annotation replacing its task's row and draft rule, empty and
unchanged corrections counted, a real JSON_MIN export refused by name. Then the same through Prefect
as the weekly cycle runs it: the feedback-etl flow pulls the project itself, with the key from a
Prefect Secret block, and pushes its run's thumbs-down tasks (from a fake Langfuse) once. Set
LABEL_STUDIO_TEST_URL + LABEL_STUDIO_TEST_TOKEN to use a server that is already running instead (its
start-up takes minutes: migrations).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import UTC
from types import SimpleNamespace

import httpx
import pytest

from irsflow.codebook.store import Codebook
from irsflow.errors import InputError
from irsflow.feedback.corrections import store_dir
from irsflow.feedback.etl import FeedbackSettings, feedback_dir, run_etl
from irsflow.feedback.label_studio import FROM_NAME, LABEL_CONFIG, TO_NAME, ls_task, read_export
from irsflow.feedback.label_studio_api import LabelStudio, pull_export
from irsflow.store import read_jsonl
from tests.support.local import free_port
from tests.support.real_services import ServerProcess, http_ok, listening_addresses, service_venv

LS_ONLY = FeedbackSettings(langfuse_enabled=False)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    if os.environ.get("LABEL_STUDIO_TEST_URL") and os.environ.get("LABEL_STUDIO_TEST_TOKEN"):
        yield SimpleNamespace(url=os.environ["LABEL_STUDIO_TEST_URL"], token=os.environ["LABEL_STUDIO_TEST_TOKEN"])
        return
    bin_dir = service_venv("label-studio", "infra/install_label_studio.sh")
    port, token = free_port(), secrets.token_hex(20)
    home = tmp_path_factory.mktemp("label-studio")
    env = {
        "LABEL_STUDIO_USERNAME": "annotator@example.com",
        "LABEL_STUDIO_PASSWORD": secrets.token_hex(8),
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"),
        "LABEL_STUDIO_API_KEY": "",
    }
    # `python -m label_studio.server`, not bin/label-studio: the venv is built under a temporary name
    # and renamed, which leaves its console scripts' #! lines pointing at the old name.
    # --internal-host is the bind address (default 0.0.0.0); --host only names the public URL.
    argv = [
        str(bin_dir / "python"),
        "-m",
        "label_studio.server",
        "start",
        "--port",
        str(port),
        "--internal-host",
        "127.0.0.1",
        "--no-browser",
    ]
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    # first start runs ~200 Django migrations: 3 minutes on a busy 2-core machine
    with ServerProcess("label-studio", argv, http_ok(f"{url}/health/"), timeout_s=900, env=env, cwd=home) as srv:
        print(f"label studio ready in {time.monotonic() - t0:.0f} s (log {srv.log_path})")
        assert listening_addresses(port) == {"127.0.0.1"}, "label studio must listen on 127.0.0.1 only"
        yield SimpleNamespace(url=url, token=token)


@pytest.fixture()
def project(label_studio):
    with LabelStudio(label_studio.url, label_studio.token) as ls:
        return ls.create_project(f"irsflow corrections {secrets.token_hex(3)}", LABEL_CONFIG)["id"]


def api(label_studio) -> httpx.Client:
    """What the annotator's browser sends (label_studio/tasks/api.py: AnnotationsListAPI, AnnotationAPI)."""
    return httpx.Client(base_url=label_studio.url, headers={"Authorization": f"Token {label_studio.token}"}, timeout=60)


def annotate(c: httpx.Client, task_id: int, text: str, cancelled: bool = False) -> dict:
    result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "textarea", "value": {"text": [text]}}]
    r = c.post(
        f"/api/tasks/{task_id}/annotations/", json={"result": result, "was_cancelled": cancelled, "lead_time": 4.2}
    )
    assert r.status_code == 201, r.text
    return r.json()


def chat(q: str, a: str) -> list[dict]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": q},
        {"role": "assistant", "content": a},
    ]


ROWS = [
    ("t1", "Capital of Peru?", "Quito."),
    ("t2", "Boiling point of water at sea level?", "90 C."),
    ("t3", "Largest ocean?", "The Pacific Ocean."),
    ("t4", "Fastest land animal?", "Horse."),
    ("t5", "Author of Hamlet?", "Marlowe."),
    ("t6", "Chemical symbol of gold?", "Ag."),
]


def cli(capsys, *argv) -> dict:
    from cli.main import main

    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_round_trip_each_correction_once_edits_replace(label_studio, project, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    tasks_file = tmp_path / "label_studio_tasks.json"
    tasks_file.write_text(json.dumps([ls_task({"messages": chat(q, a), "trace_id": tid}) for tid, q, a in ROWS]))
    assert (
        cli(capsys, "feedback", "label-studio", "push", "--project", str(project), "--tasks", str(tasks_file))["pushed"]
        == 6
    )
    # pushing the same tasks again adds none: the project's tasks are read page by page (4 a page here)
    again = cli(capsys, "feedback", "label-studio", "push", "--project", str(project), "--tasks", str(tasks_file))
    assert (again["pushed"], again["already_in_project"]) == (0, 6)
    with LabelStudio(label_studio.url, label_studio.token) as ls:
        assert sorted(d["trace_id"] for d in ls.task_data(project, page_size=4)) == [r[0] for r in ROWS]

    with api(label_studio) as c:
        ids = {t["data"]["trace_id"]: t["id"] for t in c.get(f"/api/projects/{project}/tasks/").json()}
        assert sorted(ids) == [r[0] for r in ROWS]
        a1 = annotate(c, ids["t1"], "Lima.")
        annotate(c, ids["t2"], "100 C (212 F) at sea level.")
        annotate(c, ids["t3"], "  \n  ")  # whitespace only
        annotate(c, ids["t4"], "Horse. ")  # the answer again, up to whitespace
        annotate(c, ids["t5"], "Shakespeare.", cancelled=True)  # skipped by the annotator
        # t6 left unannotated

        export1 = tmp_path / "export1.json"
        got = cli(capsys, "feedback", "label-studio", "pull", "--project", str(project), "--out", str(export1))
        assert (got["tasks"], got["annotated"]) == (6, 5), "the export holds every task, annotated or not"
        first = run_etl(LS_ONLY, "w1", label_studio_export=export1)
        assert first["files"]["golden.messages.jsonl"]["rows"] == 2 and first["files"]["pairs.jsonl"]["rows"] == 2
        assert first["codebook_drafts"] == 2
        assert first["skipped"] == {
            "label studio: empty correction": 1,
            "label studio: correction same as the answer": 1,
            "label studio: cancelled": 1,
            "label studio: not annotated": 1,
        }
        golden = {g["trace_id"]: g for g in read_jsonl(feedback_dir() / "w1" / "golden.messages.jsonl")}
        assert golden["t1"]["messages"] == chat("Capital of Peru?", "Lima.")
        assert golden["t1"]["ls_annotation_id"] == str(a1["id"]) and golden["t1"]["ls_updated_at"] == a1["updated_at"]

        # the export is cumulative: pulling again re-adds nothing
        again = run_etl(
            LS_ONLY,
            "w2",
            label_studio_export=pull_export(None, label_studio.token, project, tmp_path / "export2.json")["path"],
        )
        assert not again["written"] and not (feedback_dir() / "w2").exists()
        assert again["skipped"]["label studio: already taken (not edited since)"] == 2

        # the annotator edits t1 (PATCH, as the editor's "Update" does): replaced, not duplicated
        r = c.patch(
            f"/api/annotations/{a1['id']}/",
            json={
                "result": [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "textarea",
                        "value": {"text": ["Lima, on the coast."]},
                    }
                ]
            },
        )
        assert r.status_code == 200 and r.json()["updated_at"] != a1["updated_at"], r.text
        third = run_etl(
            LS_ONLY,
            "w3",
            label_studio_export=pull_export(None, label_studio.token, project, tmp_path / "export3.json")["path"],
        )
        assert third["counts"]["corrections"] == 1 and third["label_studio"]["replaces"] == {str(ids["t1"]): "w1"}
        store = read_jsonl(store_dir() / "golden.messages.jsonl")
        assert sorted(g["messages"][-1]["content"] for g in store) == [
            "100 C (212 F) at sea level.",
            "Lima, on the coast.",
        ]
        assert sorted(p["chosen"] for p in read_jsonl(store_dir() / "pairs.jsonl")) == [
            "100 C (212 F) at sea level.",
            "Lima, on the coast.",
        ]
        rules = {r.id: r for r in Codebook().rules(enabled_only=False)}
        assert len(rules) == 2 and not any(r.enabled for r in rules.values())
        assert "Lima, on the coast" in rules[f"ls-{ids['t1']}"].text

        # a second annotation of t2 (a new one, not an edit): it replaces t2's row, pair and rule
        a2b = annotate(c, ids["t2"], "100 degrees C at sea level.")
        fourth = run_etl(
            LS_ONLY,
            "w5",
            label_studio_export=pull_export(None, label_studio.token, project, tmp_path / "export5.json")["path"],
        )
        assert fourth["counts"]["corrections"] == 1 and fourth["label_studio"]["replaces"] == {str(ids["t2"]): "w1"}
        store = read_jsonl(store_dir() / "golden.messages.jsonl")
        assert sorted((g["trace_id"], g["messages"][-1]["content"]) for g in store) == [
            ("t1", "Lima, on the coast."),
            ("t2", "100 degrees C at sea level."),
        ]
        assert len(read_jsonl(store_dir() / "pairs.jsonl")) == 2
        rules = {r.id: r for r in Codebook().rules(enabled_only=False)}
        assert len(rules) == 2 and rules[f"ls-{ids['t2']}"].provenance["ls_annotation_id"] == str(a2b["id"])

        # a real JSON_MIN export of the same project is refused, naming the format
        r = c.get(f"/api/projects/{project}/export", params={"exportType": "JSON_MIN", "download_all_tasks": "true"})
        assert r.status_code == 200
        minimal = tmp_path / "min.json"
        minimal.write_bytes(r.content)
        assert {"annotation_id", "annotator", FROM_NAME} <= set(json.loads(r.content)[0]), (
            "JSON_MIN as the converter writes it"
        )
        with pytest.raises(InputError, match="JSON_MIN export format"):
            read_export(minimal)
        with pytest.raises(InputError, match="JSON_MIN export format"):
            run_etl(LS_ONLY, "w4", label_studio_export=minimal)
        assert sorted(p.name for p in feedback_dir().iterdir() if p.is_dir()) == ["w1", "w3", "w5"]


def test_a_bad_key_or_project_is_named_and_never_shown(label_studio, project, tmp_path):
    with pytest.raises(InputError, match="refused \\(401\\): check LABEL_STUDIO_API_KEY") as err:
        pull_export(label_studio.url, "not-the-token", project, tmp_path / "x.json")
    assert "not-the-token" not in str(err.value)
    with pytest.raises(InputError, match="not found"):
        pull_export(label_studio.url, label_studio.token, 999999, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    # a personal access token (JWT refresh token, Label Studio >= 1.18) works as well
    with api(label_studio) as c:
        r = c.post("/api/token/")  # one per user: 409 on a reused server (LABEL_STUDIO_TEST_URL) that made it
    assert r.status_code in (201, 409), r.text
    if r.status_code == 201:
        assert pull_export(label_studio.url, r.json()["token"], project, tmp_path / "x.json")["tasks"] == 0


def test_the_feedback_flow_pulls_the_project_with_the_key_from_a_secret_block(
    label_studio, project, data_dir, monkeypatch, prefect_server
):
    from prefect.blocks.system import Secret
    from prefect.logging.handlers import APILogHandler

    from flows.feedback_etl import feedback_etl

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    Secret(value=label_studio.token).save("label-studio-api-key", overwrite=True)
    with LabelStudio(label_studio.url, label_studio.token) as ls:
        ls.import_tasks(project, [ls_task({"messages": chat(q, a), "trace_id": tid}) for tid, q, a in ROWS[:2]])
    with api(label_studio) as c:
        for t in c.get(f"/api/projects/{project}/tasks/").json():
            annotate(c, t["id"], "Lima." if t["data"]["trace_id"] == "t1" else "100 C at sea level.")
    # the weekly cycle passes its settings.feedback to this flow as it is
    settings = FeedbackSettings(langfuse_enabled=False, label_studio={"url": label_studio.url, "project_id": project})
    state = feedback_etl(settings=settings, return_state=True)
    assert state.is_completed(), state
    out = state.result()
    assert out["counts"]["corrections"] == 2 and out["files"]["golden.messages.jsonl"] == 2
    assert feedback_etl(settings=settings)["written"] is False, "the second pull takes nothing again"
    APILogHandler().flush()
    run_id = state.state_details.flow_run_id
    seen = [
        httpx.get(f"{prefect_server}/flow_runs/{run_id}").text,
        httpx.post(f"{prefect_server}/logs/filter", json={"logs": {"flow_run_id": {"any_": [str(run_id)]}}}).text,
    ]
    seen += [
        p.read_text(errors="replace") for p in data_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")
    ]
    assert (
        "pull-label-studio"
        in httpx.post(f"{prefect_server}/task_runs/filter", json={"flow_runs": {"id": {"any_": [str(run_id)]}}}).text
    )
    assert not [s for s in seen if label_studio.token in s], "the key reached a parameter, a log or a file"


def test_the_feedback_flow_pushes_its_runs_thumbs_down_tasks_once(
    label_studio, project, data_dir, monkeypatch, prefect_server
):
    """The weekly cycle's settings (feedback.label_studio, push on by default): the ETL run's new
    thumbs-down tasks land in the project; the same run again (a retried cycle) pushes none."""
    from datetime import datetime, timedelta

    from flows.feedback_etl import feedback_etl
    from tests.support.fake_langfuse import FakeLangfuse

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    with FakeLangfuse() as lf:
        monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", lf.public_key)
        monkeypatch.setenv("LANGFUSE_SECRET_KEY", lf.secret_key)
        t = datetime.now(UTC) - timedelta(hours=2)
        for i, (tid, q, a) in enumerate(ROWS[:3]):
            lf.add_trace(t + timedelta(minutes=2 * i), chat(q, a)[:2], a, id=tid)
            lf.add_score(tid, "down", t + timedelta(minutes=2 * i + 1), data_type="CATEGORICAL")
        settings = FeedbackSettings(
            langfuse={"host": lf.url, "score_data_type": "CATEGORICAL", "up_values": ["up"], "down_values": ["down"]},
            label_studio={"url": label_studio.url, "project_id": project},
        )
        first = feedback_etl(settings=settings, run_id="p1")
        assert first["files"]["label_studio_tasks.json"] == 3 and first["langfuse_skipped"] is None
        assert first["label_studio_push"] == {"project": project, "pushed": 3, "already_in_project": 0}
        retried = feedback_etl(settings=settings, run_id="p1")
        assert retried["label_studio_push"] == {"project": project, "pushed": 0, "already_in_project": 3}
    with LabelStudio(label_studio.url, label_studio.token) as ls:
        assert sorted(d["trace_id"] for d in ls.task_data(project)) == ["t1", "t2", "t3"]
