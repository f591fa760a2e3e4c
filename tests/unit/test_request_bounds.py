"""Every number a request carries is bounded and finite: a request cannot ask for a billion rounds,
a rank-10^6 adapter, infinite epochs or a seed training cannot use. Checked over the whole schema
(the request and every registered stage's settings), so a field added later without a bound fails here.
"""

from __future__ import annotations

import json

import pytest

from irsflow.config import TrainRequest, parse_request
from irsflow.errors import ConfigError
from irsflow.stages import get_stage, stage_names


def numbers_without_a_bound(schema: dict) -> list[str]:
    """Paths of integer/number schemas with no maximum, anywhere in ``schema`` ($defs included)."""
    defs = schema.get("$defs", {})
    found = []

    def walk(node, path: str, seen: frozenset) -> None:
        if isinstance(node, list):
            for i, n in enumerate(node):
                walk(n, f"{path}[{i}]", seen)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                walk(defs[name], f"{path}->{name}", seen | {name})
        if node.get("type") in ("integer", "number") and "maximum" not in node and "exclusiveMaximum" not in node:
            found.append(path)
        for key, value in node.items():
            if key != "$defs":
                walk(value, f"{path}.{key}", seen)

    walk(schema, "", frozenset())
    return found


def test_every_number_in_the_request_has_an_upper_bound():
    schemas = {"request": TrainRequest.model_json_schema()}
    schemas.update({f"stage_config[{n}]": get_stage(n).settings.model_json_schema() for n in stage_names()})
    unbounded = {name: numbers_without_a_bound(s) for name, s in schemas.items()}
    assert {k: v for k, v in unbounded.items() if v} == {}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"irs_config": {"n_iterations": 10**9}}, "irs_config.n_iterations"),
        ({"irs_config": {"n_candidates": 10**9}}, "irs_config.n_candidates"),
        ({"irs_config": {"gen_batch_size": 10**9}}, "irs_config.gen_batch_size"),
        ({"irs_config": {"lora": {"r": 10**6}}}, "irs_config.lora.r"),
        ({"n_questions": 10**9}, "n_questions"),
        ({"seed": 2**64}, "seed"),
        ({"heldout": {"seed": 2**32}}, "heldout.seed"),
        ({"stage": "PPO", "stage_config": {"ppo_epochs": 10**6}}, "stage_config.ppo_epochs"),
        ({"teacher": {"max_tokens": 10**9}}, "teacher.max_tokens"),
    ],
)
def test_huge_numbers_are_refused_naming_the_field(body, field):
    with pytest.raises(ConfigError, match=rf"{field.replace('.', '[.]')}: must be <= "):
        parse_request(body)


@pytest.mark.parametrize(
    "raw, field",
    [
        ('{"irs_config": {"sft_epochs": Infinity}}', "irs_config.sft_epochs"),
        (
            '{"irs_config": {"dw_config": {"initial_weights": {"rel": Infinity}}}}',
            "irs_config.dw_config.initial_weights.rel",
        ),
        ('{"irs_config": {"dw_config": {"temperature": NaN}}}', "irs_config.dw_config.temperature"),
        ('{"scoring": {"fusion": {"weights": {"chain": Infinity}}}}', "scoring.fusion.weights.chain"),
        ('{"teacher": {"timeout_s": Infinity}}', "teacher.timeout_s"),
        ('{"stage": "DPO", "stage_config": {"beta": -Infinity}}', "stage_config.beta"),
    ],
)
def test_infinity_and_nan_are_refused(raw, field):
    with pytest.raises(ConfigError, match=rf"{field.replace('.', '[.]')}: Input should be a finite number"):
        parse_request(json.loads(raw))  # json.loads reads Infinity/NaN, as the API and the CLI do


def test_the_largest_seed_training_can_use_is_accepted():
    assert parse_request({"seed": 2**32 - 1}).seed == 2**32 - 1
