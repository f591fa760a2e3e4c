"""Held-out evaluation inside a job, early stopping and the best-round final checkpoint, through the
real Prefect flow on the tiny model with fixed seeds: a learnable reward (conc: short answers) rises on
questions the job never trained on, and a collapse trigger stops a job and says why."""

import json

import pytest

from irsflow.jobs.job import create_job, job_metrics, job_status
from irsflow.rewards.dialogue import diversity, words
from irsflow.store import hash_path
from tests.support.jobs import tiny_request

CONC = {"dw_config": {"initial_weights": {"conc": 1.0}}}


def heldout_job(tiny_model, **overrides):
    from flows.train import train_job

    req = tiny_request(
        tiny_model,
        n_questions=20,
        seed=2,
        irs_config={
            "n_iterations": 3,
            "n_candidates": 6,
            "max_new_tokens": 32,
            "learning_rate": 1e-2,
            "sft_epochs": 2,
            **CONC,
        },
        **overrides,
    )
    store = create_job(req)
    return store, train_job(request=req, job_id=store.job_id)


@pytest.fixture(scope="module")
def finished(prefect_server, tiny_model, tmp_path_factory):
    import os

    os.environ["IRSFLOW_DATA_DIR"] = str(tmp_path_factory.mktemp("heldout"))
    return heldout_job(tiny_model)


def test_every_round_and_the_start_model_answer_the_heldout_questions(finished):
    store, result = finished
    held = set(store.read_config()["heldout_ids"])
    assert len(held) == 4  # 20% of 20 questions
    for it in (1, 2, 3):  # no round trains on a held-out question
        ids = {json.loads(x)["id"] for x in (store.phase_dir(it) / "candidates.jsonl").read_text().splitlines()}
        assert len(ids) == 16 and not ids & held
    rows = [m for m in job_metrics(store.job_id) if m["phase"] == "HELDOUT"]
    assert [r["iter"] for r in rows] == [0, 1, 2, 3]
    assert all(r["n_questions"] == 4 and 0 <= r["distinct_2"] <= 1 for r in rows) and rows[0]["mean_words"] > 0
    docs = [json.loads((store.dir / f"heldout_round_{r}.json").read_text()) for r in range(4)]
    assert all({a["id"] for a in d["answers"]} == held for d in docs)
    # each row's figures are those of the answers it wrote; a later round may answer with nothing at all
    # (conc alone at this learning rate can teach the tiny model to stop at once: the collapse the guard is for)
    for r, d in zip(rows, docs):
        answers = [a["answer"] for a in d["answers"]]
        assert r["mean_words"] == round(sum(len(words(a)) for a in answers) / 4, 3)
        assert r["distinct_2"] == round(diversity(answers)["distinct_2"], 6)
    assert docs[0]["adapter"] is None and docs[2]["adapter"].endswith("iter_2")
    # the learnable reward rises on questions the job never trained on
    assert rows[-1]["reward"] >= rows[0]["reward"] + 0.02, [r["reward"] for r in rows]
    # the iteration table (and so the UI's table artifact and trend chart) carries the held-out figures
    assert [it["heldout"]["reward"] for it in result["iterations"]] == [r["reward"] for r in rows[1:]]


def test_final_is_the_best_round_by_heldout_reward(finished):
    store, result = finished
    rewards = {r["iter"]: r["reward"] for r in job_metrics(store.job_id) if r["phase"] == "HELDOUT" and r["iter"]}
    best = max(sorted(rewards), key=lambda k: rewards[k])
    assert result["final_round"] == best and result["stopped_early"] is None
    assert hash_path(store.checkpoint("final") / "adapter_model.safetensors") == hash_path(
        store.checkpoint(best) / "adapter_model.safetensors"
    )
    assert job_status(store.job_id)["detail"]["final_round"] == best


def test_a_collapse_trigger_stops_the_job_and_says_why(finished, tiny_model):
    # answers of the tiny model get much shorter as conc is learned: a tight length bound trips after round 1
    store, result = heldout_job(
        tiny_model, early_stop={"max_length_drift": 0.05, "distinct2_floor": None, "patience": 3}
    )
    assert len(result["iterations"]) == 1 and result["stopped_early"].startswith("length:"), result
    assert not store.checkpoint(2).exists()
    status = job_status(store.job_id)
    assert status["state"] == "completed" and status["detail"]["stopped_early"] == result["stopped_early"]
    note = [m for m in job_metrics(store.job_id) if m["phase"] == "METRICS" and "stopped_early" in m]
    assert len(note) == 1 and note[0]["final_round"] == 1 and note[0]["rounds_run"] == 1


def test_the_ui_table_and_trend_chart_carry_the_heldout_figures(finished):
    import os

    import httpx

    from tasks.artifacts import artifact_key

    store, _ = finished
    api = os.environ["PREFECT_API_URL"]
    key = artifact_key(store.job_id, "iterations")
    table = httpx.post(f"{api}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}).json()[0]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    held = {r["iter"]: r["reward"] for r in job_metrics(store.job_id) if r["phase"] == "HELDOUT"}
    assert [r["heldout_reward"] for r in rows] == [round(held[i], 4) for i in (1, 2, 3)]
    assert rows[0]["heldout_start_reward"] == round(held[0], 4)
    assert {"heldout_distinct_2", "heldout_words"} <= set(rows[-1])
