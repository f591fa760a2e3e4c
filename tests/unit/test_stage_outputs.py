"""What a round leaves for the next one and for resume, without training anything: each stage's own
files in the round's manifest (``Stage.writes`` / ``outputs``), the score summary's contract
(``record_scores``), and the reward env every scoring phase builds (``reward_env``)."""

import json

import pytest

from irsflow.config import ScoringConfig
from irsflow.errors import IrsflowError
from irsflow.jobs.resume import iteration_inputs, phase_outputs, read_manifest, record_outputs
from irsflow.loop import SCORING, TRAINING
from irsflow.loop.phases import SUMMARY_KEYS, record_scores, score_summary_path
from irsflow.rewards import reward_env
from irsflow.stages import get_stage, stage_names
from irsflow.store import JobStore, hash_or_missing, hash_path
from irsflow.teacher.settings import TeacherConfig

SUMMARY = {
    "avg_reward": 0.4,
    "best_avg_reward": 0.6,
    "reward_breakdown": {"conc": 0.4},
    "weights": {"conc": 1.0},
    "next_weights": {"conc": 1.0},
    "slopes": {"conc": 0.0},
    "weights_updated": False,
    "scorer": "heuristic",
}


def job(stage: str, data_dir) -> JobStore:
    """A job dir with just what resume reads of its request (the stage)."""
    store = JobStore(f"outputs-{stage.lower()}")
    store.create({"job_id": store.job_id, "request": {"stage": stage}})
    return store


def test_every_stage_names_its_own_files_by_phase():
    declared = {name: {p: list(files) for p, files in get_stage(name).writes.items()} for name in stage_names()}
    assert declared == {
        "IRS": {},
        "ONPOLICY": {SCORING: ["onpolicy.jsonl"], TRAINING: ["train_rows.jsonl"]},
        "DPO": {TRAINING: ["pairs.jsonl"]},
        "KTO": {TRAINING: ["pairs.jsonl"]},
        "GRPO": {TRAINING: ["grpo_curve.json", "score_summary.json"]},
        "PPO": {TRAINING: ["rollouts.csv", "kl.json"]},
        "RM": {TRAINING: ["pairs.jsonl", "rm_eval.json"]},
    }


def test_the_manifest_hashes_the_files_the_stage_declares_and_requires_them(data_dir):
    store = job("PPO", data_dir)
    (store.checkpoint(1) / "adapter_config.json").parent.mkdir(parents=True)
    (store.checkpoint(1) / "adapter_config.json").write_text("{}")
    d = store.phase_dir(1)
    d.mkdir(parents=True)
    (d / "rollouts.csv").write_text("round,id\n")
    (d / "pairs.jsonl").write_text("{}\n")  # another stage's file: not PPO's output
    with pytest.raises(IrsflowError, match=r"stage PPO: TRAINING of round 1 did not write phases/iter_1/kl\.json"):
        record_outputs(store, 1, TRAINING, "key-1")
    (d / "kl.json").write_text('{"next_kl_coef": 0.2}')
    entry = record_outputs(store, 1, TRAINING, "key-1")
    assert entry["outputs"] == {
        "checkpoints/iter_1": hash_path(store.checkpoint(1)),
        "phases/iter_1/rollouts.csv": hash_path(d / "rollouts.csv"),
        "phases/iter_1/kl.json": hash_path(d / "kl.json"),
    }
    assert read_manifest(store, 1)[TRAINING] == entry
    # GRPO's score summary is its training's output; for a sampling stage it is SCORING's
    assert score_summary_path(store, 1) in phase_outputs(store, get_stage("IRS"), 1, SCORING)
    assert score_summary_path(store, 1) not in phase_outputs(store, get_stage("IRS"), 1, TRAINING)


def test_record_scores_writes_what_the_next_round_starts_from(data_dir):
    store = job("GRPO", data_dir)
    with pytest.raises(ValueError, match="score summary of round 1: missing next_weights, scorer"):
        record_scores(store, 1, {k: v for k, v in SUMMARY.items() if k not in ("next_weights", "scorer")})
    assert not score_summary_path(store, 1).exists()
    moved = {**SUMMARY, "next_weights": {"conc": 1.2}, "teacher_conflicts": 0}
    assert record_scores(store, 1, moved) == moved
    assert json.loads(score_summary_path(store, 1).read_text()) == moved
    (row,) = store.read_metrics()
    assert row["phase"] == "METRICS" and {k: row[k] for k in SUMMARY_KEYS} == {k: moved[k] for k in SUMMARY_KEYS}
    assert store.read_status()["metrics"] == {
        "avg_reward": 0.4,
        "reward_breakdown": {"conc": 0.4},
        "current_weights": {"conc": 1.2},
    }
    assert set(SUMMARY_KEYS) == set(SUMMARY)


def test_the_next_round_reads_the_recorded_weights(data_dir, tiny_model):
    from irsflow.config import parse_request
    from tests.support.jobs import tiny_request

    req = parse_request(tiny_request(tiny_model, stage="GRPO", irs_config={"batch_size": 4}))
    store = job("GRPO", data_dir)
    store.checkpoint(1).mkdir(parents=True)
    (store.checkpoint(1) / "adapter_config.json").write_text("{}")
    record_scores(store, 1, {**SUMMARY, "reward_breakdown": {"rel": 0.3}, "next_weights": {"rel": 0.7}})
    inputs = iteration_inputs(store, req, 2)
    assert inputs.weights == {"rel": 0.7} and inputs.history == [{"rel": 0.3}]
    assert inputs.adapter == str(store.checkpoint(1))


def test_reward_env_carries_the_teacher_with_its_key_and_usage_file(tmp_path):
    plain = reward_env(ScoringConfig(backend="heuristic"))
    assert plain.similarity.kind == "heuristic" and plain.extras == {}
    env = reward_env(
        ScoringConfig(backend="heuristic"),
        teacher=TeacherConfig(),
        teacher_api_key="sk-test",
        usage_path=tmp_path / "teacher_usage.csv",
    )
    assert env.extras["teacher"].api_key.get_secret_value() == "sk-test"
    assert env.extras["teacher_usage_path"] == tmp_path / "teacher_usage.csv"


def test_hash_or_missing(tmp_path):
    assert hash_or_missing(tmp_path / "nope") == "missing"
    (tmp_path / "f").write_text("x")
    assert hash_or_missing(tmp_path / "f") == hash_path(tmp_path / "f")
