"""Every training stage beyond IRS runs end to end through the real Prefect flow on the tiny model,
with the same job layout (config/status/metrics, phases/iter_n, checkpoints/iter_n + final) and
its own artifacts; stage choice is the request's `stage`, nothing else."""

import csv
import json

import pytest

from irsflow.config import parse_request
from irsflow.errors import ConfigError, InputError
from irsflow.jobs.job import create_job, job_status
from irsflow.jobs.resume import iteration_inputs, stage_phases
from tests.support.jobs import tiny_request

CONC = {"dw_config": {"initial_weights": {"conc": 1.0}}}


def run_stage(tiny_model, stage: str, **overrides):
    from flows.train import train_job

    irs = {**CONC, "n_iterations": 1, "max_new_tokens": 16, "learning_rate": 5e-3, **overrides.pop("irs_config", {})}
    req = tiny_request(tiny_model, stage=stage, n_questions=4, irs_config=irs, **overrides)
    store = create_job(req)
    result = train_job(request=req, job_id=store.job_id)
    assert result["stage"] == stage and job_status(store.job_id)["state"] == "completed"
    n = parse_request(req).shared.n_iterations
    metrics = store.read_metrics()
    for it in range(1, n + 1):
        assert (store.checkpoint(it) / "adapter_config.json").is_file()
        assert any(m["iter"] == it and m["phase"] == "TRAINING" and "loss" in m for m in metrics), it
        manifest = json.loads((store.phase_dir(it) / "manifest.json").read_text())
        assert set(manifest) == set(stage_phases(parse_request(req)))  # every phase recorded its outputs
    assert (store.checkpoint("final") / "adapter_config.json").is_file()
    return store, result


def task_run_names(job_id: str) -> list[str]:
    """Names of the task runs of the job's iteration flow runs (named ``<job>-iter-<n>``)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"{job_id}-iter-")))
    return [r.name for r in runs]


def test_onpolicy_rounds_write_chatml_weights_mix_eval_and_changelog(prefect_server, tiny_model, data_dir):
    store, result = run_stage(
        tiny_model,
        "ONPOLICY",
        irs_config={"n_iterations": 2, "n_candidates": 3},
        stage_config={"mix_ratio": 0.75, "eval_questions": 3, "weight_floor": 0.1},
    )
    rows = [json.loads(x) for x in (store.phase_dir(1) / "onpolicy.jsonl").read_text().splitlines()]
    assert len(rows) >= 6 and all(
        r["messages"][-1]["role"] == "assistant" and r["messages"][0]["role"] == "system" for r in rows
    )
    assert all(
        r["meta"]["sampling"]["temperature"] == 0.9 and 0.1 <= r["weight"] <= 1 and 0 <= r["score"] <= 1 for r in rows
    )
    assert len({r["weight"] for r in rows}) > 1  # scores differ, so do the loss weights
    mix = [json.loads(x) for x in (store.phase_dir(2) / "train_rows.jsonl").read_text().splitlines()]
    on = sum(r["source"] == "onpolicy" for r in mix)
    assert abs(on / len(mix) - 0.75) <= 1 / len(mix)
    assert all(r["weight"] == 1.0 for r in mix if r["source"] == "anchor")
    for it in (1, 2):
        doc = json.loads((store.dir / f"eval_round_{it}.json").read_text())
        assert doc["round"] == it and doc["n_questions"] == 3 and doc["stage"] == "ONPOLICY"
        assert 0 <= doc["dialogue"]["question_ratio"] <= 1 and "distinct_2" in doc["diversity"]
        assert doc["training"]["loss"] > 0 and doc["adapter"].endswith(f"iter_{it}")
    log = (store.dir / "CHANGELOG.md").read_text().splitlines()
    assert [x[:9] for x in log if x.startswith("- round")] == ["- round 1", "- round 2"]
    assert "question_ratio" in log[-1] and "iter_2" in log[-1]
    names = task_run_names(store.job_id)
    assert {"generate-iter-1", "score-iter-1", "train-onpolicy-iter-1", "evaluate-round-iter-2"} <= set(names), names


def test_dpo_and_kto_train_on_pairs_from_candidates_and_files(prefect_server, tiny_model, data_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"Say something about item {i}.",
                    "chosen": f"Item {i} is fine.",
                    "rejected": f"zzz {i}",
                    "source": "thumbs",
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    store, _ = run_stage(tiny_model, "DPO", stage_config={"min_margin": 0.0, "pairs": [str(pairs)]})
    used = [json.loads(x) for x in (store.phase_dir(1) / "pairs.jsonl").read_text().splitlines()]
    assert {p["source"] for p in used} == {"irs", "thumbs"} and all(p["chosen"] != p["rejected"] for p in used)
    row = next(m for m in store.read_metrics() if m["phase"] == "TRAINING" and "loss" in m)
    assert row["rows"] == len(used) and "margin_last" in row
    dpo_final = str(store.checkpoint("final"))
    store, _ = run_stage(
        tiny_model, "KTO", stage_config={"min_margin": 0.0, "pairs": [str(pairs)]}, init_adapter=dpo_final
    )
    assert store.read_config()["init_adapter_path"] == dpo_final  # round 1 continues the DPO adapter
    assert iteration_inputs(store, parse_request(store.read_config()["request"]), 1).adapter == dpo_final
    rows = [json.loads(x) for x in (store.phase_dir(1) / "pairs.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows} == {True, False}
    assert {"completion": "Item 0 is fine.", "label": True} in [
        {k: r[k] for k in ("completion", "label")} for r in rows
    ]


def test_grpo_rounds_move_the_reward_weights(prefect_server, tiny_model, data_dir):
    store, result = run_stage(
        tiny_model,
        "GRPO",
        irs_config={
            "n_iterations": 2,
            "n_candidates": 2,
            "batch_size": 4,
            "dw_config": {"initial_weights": {"conc": 1.0, "length_limit": 1.0}},
        },
    )
    assert not (store.phase_dir(1) / "candidates.jsonl").exists()  # GRPO samples inside its trainer
    s1 = json.loads((store.phase_dir(1) / "score_summary.json").read_text())
    s2 = json.loads((store.phase_dir(2) / "score_summary.json").read_text())
    assert s2["weights"] == s1["next_weights"] and set(s1["reward_breakdown"]) == {"conc", "length_limit"}
    assert json.loads((store.phase_dir(1) / "grpo_curve.json").read_text())
    assert result["iterations"][1]["weights_used"] == s1["next_weights"]


def test_ppo_writes_rewards_csv_and_kl_metrics_with_an_adaptive_coefficient(prefect_server, tiny_model, data_dir):
    store, _ = run_stage(
        tiny_model,
        "PPO",
        irs_config={"n_iterations": 2, "n_candidates": 2},
        stage_config={"target_kl": 0.5, "init_kl_coef": 0.2},
        track=True,
    )
    kl = json.loads((store.dir / "kl_metrics.json").read_text())
    assert [r["round"] for r in kl["rounds"]] == [1, 2] and kl["target_kl"] == 0.5
    r1, r2 = kl["rounds"]
    assert r1["kl_coef"] == 0.2 and r2["kl_coef"] == r1["next_kl_coef"]
    assert r1["kl_mean"] == pytest.approx(0.0, abs=1e-3)  # round 1's rollouts come from the reference itself
    assert r2["next_kl_coef"] != r2["kl_coef"]  # the controller moved it toward the target
    with open(store.dir / "rewards.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["round"] for r in rows} == {"1", "2"} and len(rows) == 2 * 4 * 2
    assert (store.checkpoint(2) / "value_head.safetensors").is_file()
    from irsflow.release.registry import Registry

    rid = store.read_status()["mlflow_run_id"]  # the job's MLflow run carries each round's PPO figures
    hist = Registry().client.get_metric_history(rid, "train.kl_mean")
    assert [m.step for m in hist] == [1, 2] and hist[1].value == pytest.approx(r2["kl_mean"])


def test_reward_model_stage_trains_a_scorer(prefect_server, tiny_model, data_dir, tmp_path):
    from irsflow.rewards import RewardBatch
    from irsflow.rewards.rm import RewardModelScorer

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "chosen": "Please rest and see a doctor.", "rejected": "qq zz xx"})
            + "\n"
            for i in range(12)
        )
    )
    store, _ = run_stage(
        tiny_model, "RM", stage_config={"from_candidates": False, "pairs": [str(pairs)], "holdout": 0.25}
    )
    ev = json.loads((store.phase_dir(1) / "rm_eval.json").read_text())
    assert ev["heldout_pairs"] == 3 and ev["train_pairs"] == 9 and ev["accuracy"] is not None
    scorer = RewardModelScorer(store.checkpoint("final"))
    try:
        assert len(scorer(RewardBatch(questions=["q"], answers=["a"]))) == 1
    finally:
        scorer.close()
    from irsflow.release.gate_run import EvalGateSettings, register_job

    with pytest.raises(InputError, match="trained a reward model"):  # not a policy to promote and serve
        register_job(EvalGateSettings(), store)


def test_stage_inputs_are_checked_before_any_model_loads(tiny_model, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="stage_config.pairs: stage DPO needs"):
        parse_request(tiny_request(tiny_model, stage="DPO", stage_config={"from_candidates": False}))
    kto = {"from_candidates": False, "pairs": [str(tmp_path / "p.jsonl")]}  # a path inside the allowed roots
    parse_request(tiny_request(tiny_model, stage="KTO", stage_config=kto))
    with pytest.raises(ConfigError, match="stage_config.kto_up: stage KTO needs"):
        parse_request(tiny_request(tiny_model, stage="KTO", stage_config={"from_candidates": False}))
    with pytest.raises(ConfigError, match="irs_config.batch_size: stage GRPO"):
        parse_request(tiny_request(tiny_model, stage="GRPO", irs_config={"n_candidates": 3, "batch_size": 4}))
    with pytest.raises(ConfigError, match="irs_config.n_iterations: stage RM"):
        parse_request(tiny_request(tiny_model, stage="RM"))
    with pytest.raises(ConfigError, match="stage"):
        parse_request(tiny_request(tiny_model, stage="SFT"))
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(InputError, match=r"pairs.jsonl:2: 'rejected'"):
        create_job(tiny_request(tiny_model, stage="DPO", stage_config={"pairs": [str(bad)]}))
    with pytest.raises(InputError, match="init_adapter: adapter .*no adapter_config.json"):
        create_job(tiny_request(tiny_model, stage="DPO", init_adapter=str(tmp_path / "no-such-adapter")))
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(InputError, match=r"anchors.jsonl:1: 'messages' must end"):
        create_job(tiny_request(tiny_model, stage="ONPOLICY", stage_config={"anchors": str(anchors)}))
    assert not list((data_dir / "jobs").glob("*")) if (data_dir / "jobs").exists() else True
