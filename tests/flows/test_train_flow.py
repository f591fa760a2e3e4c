"""A whole job through the real Prefect training flow (``flows/train.py``), of the default stage (IRS),
on the tiny model: artifact layout, status, what the UI shows, adapters that reload, and a learnable
reward that rises."""

import json

import pytest
from peft import PeftModel

from irsflow.jobs.job import create_job, job_metrics, job_status
from irsflow.models import load_model
from tests.support.jobs import tiny_request


@pytest.fixture(scope="module")
def finished_job(prefect_server, tiny_model, tmp_path_factory):
    import os

    os.environ["IRSFLOW_DATA_DIR"] = str(tmp_path_factory.mktemp("flowdata"))
    from flows.train import train_job

    # conc rewards short answers; the random model learns to stop early (emit <|im_end|>).
    req = tiny_request(
        tiny_model,
        n_questions=8,
        seed=2,
        track=True,
        irs_config={
            "n_iterations": 3,
            "n_candidates": 6,
            "max_new_tokens": 32,
            "learning_rate": 1e-2,
            "sft_epochs": 2,
            "dw_config": {"initial_weights": {"conc": 1.0}},
        },
    )
    store = create_job(req)
    result = train_job(request=req, job_id=store.job_id)
    return store, result


def test_artifact_layout_matches_the_seed(finished_job):
    store, result = finished_job
    d = store.dir
    assert d.name == f"train_{store.job_id}" and result["job_dir"] == str(d)
    for f in ("config.json", "metrics.jsonl", "samples.jsonl", "train.log", "status.json"):
        assert (d / f).is_file(), f
    for ck in ("iter_1", "iter_2", "iter_3", "final"):
        assert (d / "checkpoints" / ck / "adapter_model.safetensors").is_file(), ck
    assert not [p for p in d.rglob(".*") if p.is_file()], "temp files left behind"
    rows = job_metrics(store.job_id)
    assert {r["phase"] for r in rows} == {"GENERATING", "SCORING", "METRICS", "TRAINING"}
    metrics = [r for r in rows if r["phase"] == "METRICS"]
    assert [r["iter"] for r in metrics] == [1, 2, 3]
    assert all({"ts", "avg_reward", "reward_breakdown", "weights"} <= set(r) for r in metrics)
    training = [r for r in rows if r["phase"] == "TRAINING" and "loss" in r]
    assert len(training) == 3 and all(r["loss"] > 0 for r in training)
    assert any(r.get("progress") == 100.0 for r in rows if r["phase"] == "GENERATING")
    samples = [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 8
    s = samples[0]
    assert len(s["candidates"]) == 6 and s["chosen"] == s["candidates"][s["chosen_index"]]["text"]
    assert s["chosen_total"] == max(c["total"] for c in s["candidates"])
    assert "temperature" in s["sampling"] and "conc" in s["candidates"][0]["rewards"]
    assert "iter 3" in (d / "train.log").read_text()


def test_status_reports_the_finished_job(finished_job):
    store, _ = finished_job
    st = job_status(store.job_id)
    assert st["state"] == "completed" and st["stage"] == "IRS"
    det = st["detail"]
    assert det["current_round"] == 3 and det["total_rounds"] == 3
    assert set(det["metrics"]["current_weights"]) == {"conc"} and det["metrics"]["avg_reward"] is not None
    assert det["runtime"]["device"] in ("cpu", "cuda") and det["runtime"]["gpu_mem_used"] > 0


def test_adapters_reload_with_peft(finished_job, tiny_model):
    store, _ = finished_job
    model = PeftModel.from_pretrained(load_model(str(tiny_model)), str(store.checkpoint("final")))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())


def test_learnable_reward_rises(finished_job):
    store, _ = finished_job
    conc = [r["reward_breakdown"]["conc"] for r in job_metrics(store.job_id) if r["phase"] == "METRICS"]
    assert conc[-1] >= conc[0] + 0.02, conc


def test_the_ui_gets_progress_table_chart_and_the_phase_logs(finished_job):
    """What the Prefect UI shows for the job: artifacts, and flow-run logs telling the same story
    as train.log."""
    import os
    import time

    import httpx
    from prefect.logging.handlers import APILogHandler

    from tasks.artifacts import artifact_key

    store, _ = finished_job
    api = os.environ["PREFECT_API_URL"]
    keys = {what: artifact_key(store.job_id, what) for what in ("progress", "iterations", "trends")}
    arts = {
        a["key"]: a
        for a in httpx.post(
            f"{api}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": list(keys.values())}}}
        ).json()
    }
    assert arts[keys["progress"]]["type"] == "progress" and arts[keys["progress"]]["data"] == 100.0
    table = arts[keys["iterations"]]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert table["type"] == "table" and [r["iter"] for r in rows] == [1, 2, 3]
    assert {"avg_reward", "r_conc", "w_conc", "loss", "generate_s", "score_s", "train_s"} <= set(rows[0])
    assert "data:image/png;base64," in arts[keys["trends"]]["data"]
    assert (store.dir / "charts" / "trends.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    APILogHandler().flush()
    flows = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"like_": store.job_id}}}).json()
    ids = [f["id"] for f in flows]
    assert len(ids) == 4  # the job and its three rounds
    wanted = ["generated 8 x 6 candidates", "iter 3: avg reward", "sft: 8 examples", f"job {store.job_id}: 3 rounds"]
    deadline = time.time() + 20
    while True:  # run logs are shipped in the background in batches
        logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": ids}}, "limit": 200}).json()
        text = "\n".join(entry["message"] for entry in logs)
        if all(w in text for w in wanted) or time.time() > deadline:
            break
        time.sleep(1)
    assert all(w in text for w in wanted), text[-3000:]
    train_log = (store.dir / "train.log").read_text()
    assert all(w in train_log for w in wanted)
    assert not any(line.count(" sft: 8 examples") > 1 for line in train_log.splitlines())
    assert train_log.count(f"job {store.job_id}: 3 rounds") == 1, "each line once in train.log"


def test_the_finished_job_is_an_mlflow_run(finished_job):
    from irsflow.release.registry import Registry

    store, _ = finished_job
    reg = Registry()
    rid = store.read_status()["mlflow_run_id"]
    run = reg.client.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["irsflow.job_id"] == store.job_id
    assert [m.step for m in reg.client.get_metric_history(rid, "avg_reward")] == [1, 2, 3]
    assert run.data.params["irs_config.n_candidates"] == "6"
    files = {f.path for f in reg.client.list_artifacts(rid, "adapter")}
    assert "adapter/adapter_model.safetensors" in files
    assert reg.log_job(store) == rid  # a gate run reuses the job's run
