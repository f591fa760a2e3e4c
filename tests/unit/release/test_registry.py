"""Real MLflow on SQLite under tmp_path: a job becomes a run (params, per-iteration metrics, data
hashes, adapter files), a registered version aliased challenger whose local copy is cached; promote
moves champion and remembers the previous one; rollback moves it back; a broken adapter never
reaches an alias."""

from pathlib import Path

import pytest

from irsflow.errors import InputError
from irsflow.jobs.job import create_job
from irsflow.release.adapter_cache import check_adapter
from irsflow.release.registry import CHALLENGER, CHAMPION, Registry, TrackingSettings
from irsflow.store import hash_path
from tests.support.jobs import tiny_request


def finished_job(tiny_model, seed: int, reward: float):
    from peft import LoraConfig, get_peft_model

    from irsflow.models import load_model

    store = create_job(tiny_request(tiny_model, seed=seed))
    model = get_peft_model(load_model(str(tiny_model)), LoraConfig(r=4, target_modules="all-linear"))
    model.save_pretrained(store.checkpoint("final"))
    for it in (1, 2):
        store.metric(it, "METRICS", avg_reward=reward + it / 10, reward_breakdown={"conc": 0.5 + it / 10})
    store.samples_path.write_text('{"iter": 1, "id": "q", "question": "q", "chosen": "a"}\n')
    return store


@pytest.fixture
def registry(data_dir):
    return Registry(TrackingSettings())


def test_job_run_register_promote_rollback(registry, tiny_model, data_dir):
    job1 = finished_job(tiny_model, 1, 0.3)
    run1 = registry.log_job(job1)
    run = registry.client.get_run(run1)
    assert run.data.params["irs_config.n_candidates"] == "4" and run.data.params["model_id"] == str(tiny_model)
    assert [m.value for m in registry.client.get_metric_history(run1, "avg_reward")] == pytest.approx([0.4, 0.5])
    assert run.data.tags["irsflow.train_data_sha256"] and run.data.tags["irsflow.questions_sha256"]
    assert str(data_dir) in run.info.artifact_uri  # artifacts under the data dir, not ./mlruns
    v1 = registry.register(run1, job1)
    mv = registry.version(CHALLENGER)
    assert (
        str(mv.version) == v1 == "1" and mv.tags["job_id"] == job1.job_id and mv.tags["base_model"] == str(tiny_model)
    )
    p1 = registry.adapter_path(v1)  # the local copy in the cache, made when the version was registered
    check_adapter(p1)
    assert Path(p1).parent == data_dir / "adapter_cache" / registry.s.model_name
    assert hash_path(Path(p1)) == hash_path(job1.checkpoint("final"))
    assert [x.name for x in Path(p1).parent.iterdir()] == [Path(p1).name]  # no temp folder left behind
    assert registry.register(run1, job1) == "1"  # a retried gate gets the same version, no duplicate
    assert len(registry.client.search_model_versions(f"name='{registry.s.model_name}'")) == 1
    assert registry.promote(v1) is None and str(registry.version(CHAMPION).version) == "1"
    assert registry.promote(v1) is None and registry.champion_history() == ["1"]  # a retried promotion: no-op

    job2 = finished_job(tiny_model, 2, 0.6)
    v2 = registry.register(registry.log_job(job2), job2)
    assert str(registry.version(CHALLENGER).version) == "2" and str(registry.version(CHAMPION).version) == "1"
    assert registry.promote(v2) == "1" and str(registry.version(CHAMPION).version) == "2"
    assert registry.rollback() == ("2", "1")
    assert str(registry.version(CHAMPION).version) == "1"
    assert registry.client.get_model_version(registry.s.model_name, "2").tags["rolled_back"] == "true"
    with pytest.raises(InputError, match="no previous champion"):
        registry.rollback()


def test_a_broken_adapter_fails_before_any_alias_moves(registry, tiny_model):
    job1 = finished_job(tiny_model, 1, 0.3)
    v1 = registry.register(registry.log_job(job1), job1)
    registry.promote(v1)
    bad = finished_job(tiny_model, 3, 0.9)
    (bad.checkpoint("final") / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    run = registry.log_job(bad)
    with pytest.raises(InputError, match="adapter_model.safetensors does not load"):
        registry.register(run, bad)
    assert str(registry.version(CHALLENGER).version) == "1" and str(registry.version(CHAMPION).version) == "1"
    assert len(registry.client.search_model_versions(f"name='{registry.s.model_name}'")) == 1
    (bad.checkpoint("final") / "adapter_config.json").unlink()
    with pytest.raises(InputError, match="no adapter_config.json"):
        check_adapter(bad.checkpoint("final"))
