"""Eval suites on the tiny model: base vs a (zero-initialised, so identical) LoRA adapter answer
the same; per-item arrays pair up; the gate refuses to promote a model that is no better."""

import numpy as np
import pytest

from irsflow.evals.gate import GateConfig, decide
from irsflow.evals.suites import EvalSuites, run_suites


@pytest.fixture(scope="module")
def zero_adapter(tiny_model, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from irsflow.models import load_model

    path = tmp_path_factory.mktemp("adapter") / "a"
    get_peft_model(load_model(str(tiny_model)), LoraConfig(r=4, target_modules="all-linear")).save_pretrained(path)
    return str(path)


def test_suites_pair_up_and_an_unchanged_model_is_not_promoted(tiny_model, zero_adapter):
    cfg = EvalSuites(heldout_n=6, max_new_tokens=12, mc_max_new_tokens=6, scoring={"backend": "heuristic"})
    base, details = run_suites(str(tiny_model), None, cfg)
    same, _ = run_suites(str(tiny_model), zero_adapter, cfg)
    assert set(base.per_item) == {"mc_correct", "safety", "reward"}
    assert len(base.per_item["mc_correct"]) == 16 and len(base.per_item["safety"]) == 12
    assert len(base.per_item["reward"]) == 6
    for k in base.per_item:  # LoRA B starts at zero: same answers, same scores
        np.testing.assert_allclose(base.per_item[k], same.per_item[k])
    assert 0 <= base.scalars["distinct_2"] <= 1 and "dialogue_question_ratio" in base.scalars
    assert details["generation"]["prompts"] == 16 + 12 + 6  # one model load for every suite
    d = decide(base, same, GateConfig(floors={}))
    assert not d.promote and d.numbers["primary"]["mean_diff"] == 0


def test_loglik_choices_are_batched_consistently_and_follow_the_adapter(tiny_model, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from irsflow.evals.answers import Group, answer_suites
    from irsflow.evals.mc import load_mc
    from irsflow.models import load_model

    items = load_mc("builtin:mc")
    group = {"mc": Group([i.prompt() for i in items], letters=[list(i.letters) for i in items])}
    batched, _ = answer_suites(str(tiny_model), None, group, batch_size=16)
    single, _ = answer_suites(str(tiny_model), None, group, batch_size=1)
    assert batched == single  # left padding does not change the pick
    path = tmp_path_factory.mktemp("rand") / "a"
    model = get_peft_model(
        load_model(str(tiny_model)), LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False)
    )
    model.save_pretrained(path)
    changed, _ = answer_suites(str(tiny_model), str(path), group, batch_size=16)
    assert changed != batched and all(len(a) == 1 and a[0] in "ABCD" for a in changed["mc"])


def test_teacher_flags_zero_safety_items(tiny_model, tmp_path):
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI(api_key="sk-eval") as srv:
        srv.route = lambda req: {
            "kind": "ok",
            "score": 0.2,
            "safety_flag": "Question 1" not in req["messages"][1]["content"],
        }
        cfg = EvalSuites(
            mc_set=None,
            heldout_set=None,
            max_new_tokens=6,
            teacher={"base_url": srv.base_url, "cache_path": str(tmp_path / "c.sqlite"), "backoff_s": 0.01},
        )
        plain, _ = run_suites(str(tiny_model), None, cfg.model_copy(update={"teacher": None}))
        judged, details = run_suites(str(tiny_model), None, cfg, teacher_api_key="sk-eval")
    assert srv.count == 12 and judged.scalars["teacher_safety_flags"] == 12.0  # one call per red-team answer
    assert judged.per_item["safety"].tolist() == [0.0] * 12 and details["safety"][0]["teacher_safety_flag"] is True
    assert len(plain.per_item["safety"]) == 12 and "teacher_safety_flags" not in plain.scalars


def test_eval_cli_on_a_registry_uri(tiny_model, zero_adapter, data_dir, capsys):
    import json

    from cli.main import main
    from irsflow.errors import InputError
    from irsflow.release.adapter_cache import resolve_adapter

    with pytest.raises(InputError, match="names no version"):
        resolve_adapter("registry:champion")
    assert resolve_adapter(zero_adapter) == zero_adapter
    assert (
        main(["eval", "--model", str(tiny_model), "--adapter", zero_adapter, "--samples", "4", "--mode", "loglik"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["scalars"]["mc_accuracy"] <= 1 and out["generation"]["prompts"] == 4 + 12 + 16
    from irsflow.release.registry import Registry  # every eval is an MLflow run, its per-item file attached

    run = Registry().client.get_run(out["mlflow_run_id"])
    assert run.data.tags["irsflow.kind"] == "eval" and run.data.metrics["mc_accuracy"] == out["scalars"]["mc_accuracy"]
    assert run.data.params["adapter"] == zero_adapter
    assert json.loads(open(out["file"]).read())["per_item"]["mc_correct"]
