"""The request schema: every shipped config loads, bad values fail naming the field path."""

import json

import pytest
from pydantic import ValidationError

from irsflow.config import TrainRequest, load_request, parse_request
from irsflow.errors import ConfigError
from tests.support.local import ROOT

SEED_BODY = {
    "stage": "IRS",
    "model_id": "Qwen/Qwen2.5-1.5B-Instruct",
    "irs_config": {
        "n_iterations": 3,
        "n_candidates": 4,
        "batch_size": 2,
        "learning_rate": 2e-5,
        "max_new_tokens": 256,
        "load_in_4bit": True,
        "dw_config": {
            "history_window": 5,
            "temperature": 2.0,
            "initial_weights": {"rel": 1.0, "faith": 1.0, "conc": 0.5},
        },
    },
    "n_questions": 100,
    "top_k": 3,
}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    req = load_request(path)
    assert req.stage == "IRS"


def test_seed_request_body_is_accepted_exactly():
    req = parse_request(SEED_BODY)
    assert req.shared.dw_config.initial_weights == {"rel": 1.0, "faith": 1.0, "conc": 0.5}
    assert req.shared.load_in_4bit is True and req.model_id == "Qwen/Qwen2.5-1.5B-Instruct"
    assert parse_request({**SEED_BODY, "dataset": "builtin:demo", "seed": 7}).seed == 7


def test_defaults_live_in_the_schema():
    req = TrainRequest()
    assert (req.shared.n_candidates, req.top_k, req.n_questions) == (4, 3, 100)
    assert req.model_id == "builtin:smollm2-135m-instruct" and req.dataset == "builtin:demo"


def test_the_shared_settings_keep_their_wire_name_irs_config():
    """``TrainRequest.shared`` is written ``irs_config`` in request bodies, job dirs and Prefect parameters;
    a body may also call it ``shared``."""
    req = parse_request({"irs_config": {"n_iterations": 2}})
    assert req.shared.n_iterations == 2 and req == parse_request({"shared": {"n_iterations": 2}})
    for dumped in (req.model_dump(), req.model_dump(mode="json"), json.loads(req.model_dump_json())):
        assert dumped["irs_config"]["n_iterations"] == 2 and "shared" not in dumped
    assert parse_request(req.model_dump(mode="json")) == req  # a stored request reads back the same
    props = TrainRequest.model_json_schema()["properties"]
    assert "irs_config" in props and "shared" not in props
    with pytest.raises(ConfigError, match=r"shared\.n_candidates: must be >= 2"):  # named as the body named it
        parse_request({"shared": {"n_candidates": 1}})


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"irs_config": {"n_candidates": 1}}, "irs_config.n_candidates: must be >= 2"),
        ({"irs_config": {"learning_rate": 0}}, "irs_config.learning_rate: must be > 0"),
        ({"irs_config": {"dw_config": {"temperature": -1}}}, "irs_config.dw_config.temperature: must be > 0"),
        ({"irs_config": {"dw_config": {"history_window": 1}}}, "irs_config.dw_config.history_window: must be >= 2"),
        (
            {"irs_config": {"dw_config": {"initial_weights": {"rel": 1, "bogus": 1}}}},
            "irs_config.dw_config.initial_weights: unknown reward 'bogus'",
        ),
        (
            {"irs_config": {"dw_config": {"initial_weights": {"rel": -1}}}},
            "irs_config.dw_config.initial_weights: weight of 'rel' must be >= 0",
        ),
        ({"irs_config": {"n_candidate": 4}}, "irs_config.n_candidate: unknown field"),
        ({"stage": "SFT"}, "stage: 'SFT' is not one of IRS, ONPOLICY, DPO, KTO, GRPO, PPO, RM"),
        ({"top_k": -1}, "top_k: must be >= 0"),
        ({"model_id": ""}, "model_id: must not be empty"),
        ({"n_questions": "many"}, "n_questions: Input should be a valid integer"),
    ],
)
def test_bad_values_fail_naming_the_field(patch, message):
    body = json.loads(json.dumps(SEED_BODY))
    for k, v in patch.items():
        if isinstance(v, dict) and k == "irs_config":
            for k2, v2 in v.items():
                if isinstance(v2, dict):
                    body[k][k2].update(v2)
                else:
                    body[k][k2] = v2
        else:
            body[k] = v
    with pytest.raises(ConfigError) as err:
        parse_request(body)
    assert message in str(err.value)


def test_a_deliberately_bad_file_fails_with_path_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"irs_config": {"n_candidates": 1}}))
    with pytest.raises(ConfigError, match=r"bad\.json.*\n.*irs_config\.n_candidates: must be >= 2"):
        load_request(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_request(broken)
    yml = tmp_path / "req.yaml"
    yml.write_text("irs_config:\n  n_iterations: 2\n")
    assert load_request(yml).shared.n_iterations == 2


def test_request_is_frozen():
    req = TrainRequest()
    with pytest.raises(ValidationError, match="frozen"):
        req.top_k = 5
