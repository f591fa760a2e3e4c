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
    model = get_peft_model(load_model(str(tiny_model)), LoraConfig(r=8, target_modules="all-linear",
                                                                   init_lora_weights=False))
    model.save_pretrained(path)
    changed, _ = answer_suites(str(tiny_model), str(path), group, batch_size=16)
    assert changed != batched and all(len(a) == 1 and a[0] in "ABCD" for a in changed["mc"])
