"""Gate runs against real MLflow on SQLite under tmp_path: numbered per registered model, each one's
MLflow run, tags and ``gate_run_<n>.json`` under ``gate_run_<n>/``; a registry written when the
counter was still the ``gate_rounds`` tag continues its numbering from it."""

import json

import pytest

from irsflow.release.gate_run import EvalGateSettings, decide_and_record, gate_markdown, gate_run_dir, next_gate_run
from irsflow.release.registry import Registry


def scores(correct: list[int], distinct_2: float) -> dict:
    return {
        "per_item": {"mc_correct": correct, "safety": [1.0] * len(correct)},
        "scalars": {"mc_accuracy": sum(correct) / len(correct), "distinct_2": distinct_2},
        "details": {"dialogue": {"question_ratio": 0.5}},
    }


@pytest.fixture
def gate(data_dir, tmp_path):
    """Settings and a registry holding one version (the challenger the gate runs judge)."""
    s = EvalGateSettings(gate={"n_boot": 200})
    reg = Registry(s.tracking)
    reg.client.create_registered_model(reg.s.model_name)
    (tmp_path / "adapter").mkdir()
    version = str(reg.client.create_model_version(reg.s.model_name, str(tmp_path / "adapter")).version)
    return s, reg, version


def test_gate_runs_are_numbered_and_recorded_under_their_own_name(gate, data_dir):
    s, reg, version = gate
    champ, chall = scores([0, 0, 1, 0] * 5, 0.6), scores([1, 1, 1, 0] * 5, 0.5)
    assert next_gate_run(reg) == 1
    r1 = decide_and_record(s, version, champ, chall, 1, None)
    assert r1["gate_run"] == 1 and r1["promote"] and "round" not in r1
    assert next_gate_run(reg) == 2
    assert reg.client.get_registered_model(reg.s.model_name).tags == {"gate_runs": "1"}
    run = reg.client.get_run(r1["mlflow_run_id"])
    assert run.info.run_name == f"gate-run-1-v{version}" and run.data.tags["gate.run"] == "1"
    assert reg.version(version).tags["gate.run"] == "1"
    assert gate_run_dir(s, 1) == data_dir / "evals" / s.tracking.model_name / "gate_run_1"
    doc = json.loads((gate_run_dir(s, 1) / "gate_run_1.json").read_text())
    assert doc["gate_run"] == 1 and doc["version"] == version and doc["gate"]["promote"]
    assert doc["challenger"]["dialogue"] == {"question_ratio": 0.5}
    assert not list(data_dir.rglob("eval_round_*.json"))  # that name is a training round's eval only
    assert gate_markdown(r1).startswith(f"# Eval gate, gate run 1: version {version} vs the base model")


def test_a_registry_counted_with_the_old_tag_continues_its_numbering(gate):
    s, reg, version = gate
    # what the gate wrote before its runs were called gate runs: 4 of them, counted in gate_rounds
    reg.client.set_registered_model_tag(reg.s.model_name, "gate_rounds", "4")
    n = next_gate_run(reg)
    assert n == 5
    decide_and_record(s, version, scores([0, 1] * 10, 0.5), scores([0, 1] * 10, 0.5), n, None)
    # the new tag takes over and the old one goes, so the model has one counter again
    assert reg.client.get_registered_model(reg.s.model_name).tags == {"gate_runs": "5"}
    assert next_gate_run(reg) == 6
