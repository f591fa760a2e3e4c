"""Every registered stage trains one round on the tiny model through its ``Stage`` object alone (no
Prefect): the phases its object lists, run as the library functions the tasks wrap. Each round must
move the adapter away from where it started and write the stage's own files; the request schema
validates each stage's settings with that stage's model."""

import json

import pytest
import torch
from safetensors.torch import load_file

from irsflow.config import TrainRequest, parse_request, stored_request
from irsflow.errors import ConfigError
from irsflow.jobs.job import create_job, job_request
from irsflow.jobs.resume import phase_key
from irsflow.loop import SCORING, TRAINING
from irsflow.stages import get_stage, stage_names
from tests.support.jobs import tiny_request

CONC = {"dw_config": {"initial_weights": {"conc": 1.0, "length_limit": 0.5}}}
# what each stage writes beside its adapter (a stage that skips its own step fails here)
OWN_FILES = {
    "ONPOLICY": ["onpolicy.jsonl", "train_rows.jsonl"],
    "DPO": ["pairs.jsonl"],
    "KTO": ["pairs.jsonl"],
    "GRPO": ["grpo_curve.json", "score_summary.json"],
    "PPO": ["rollouts.csv", "kl.json"],
    "RM": ["pairs.jsonl", "rm_eval.json"],
    "IRS": ["scores.jsonl"],
}
SETTINGS = {"DPO": {"min_margin": 0.0}, "KTO": {"min_margin": 0.0}, "RM": {"min_margin": 0.0, "holdout": 0.25}}
# stage_config as job dirs stored it before each stage had its own settings model: every stage's fields
PRE_SPLIT = {
    "mix_ratio": 0.8,
    "anchors": None,
    "weight_floor": 0.0,
    "pairs": [],
    "kto_up": None,
    "kto_down": None,
    "from_candidates": True,
    "min_margin": 0.05,
    "beta": 0.1,
    "holdout": 0.2,
    "target_kl": 6.0,
    "init_kl_coef": 0.2,
    "clip_range": 0.2,
    "vf_coef": 0.1,
    "ppo_epochs": 2,
    "gamma": 1.0,
    "lam": 0.95,
    "eval_each_round": None,
    "eval_questions": 8,
}


def run_round(store, req: TrainRequest) -> dict:
    """One round, phase by phase, as the flow's tasks run it (no Prefect): each phase's result by phase."""
    from irsflow.jobs.rounds import run_round_local

    return run_round_local(store, req, 1).phases


def lora_b_norm(adapter) -> float:
    """LoRA's B matrices start at zero: a norm above zero means the round trained."""
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    return float(sum(t.float().norm() for k, t in weights.items() if "lora_B" in k))


@pytest.mark.parametrize("name", ["IRS", "ONPOLICY", "DPO", "KTO", "GRPO", "PPO", "RM"])
def test_each_stage_trains_a_round_through_its_object(name, tiny_model, data_dir):
    irs = {**CONC, "n_iterations": 1, "n_candidates": 4, "max_new_tokens": 16, "learning_rate": 5e-3, "batch_size": 4}
    store = create_job(
        tiny_request(tiny_model, stage=name, n_questions=4, irs_config=irs, stage_config=SETTINGS.get(name, {}))
    )
    req = job_request(store)
    torch.manual_seed(0)
    out = run_round(store, req)
    train = out[TRAINING]
    assert train["adapter"] == str(store.checkpoint(1)) and train["loss"] == train["loss"]  # not NaN
    if name != "RM":  # RM's adapter is a scalar head on a fresh LoRA: its own check is the held-out accuracy
        assert lora_b_norm(store.checkpoint(1)) > 0
    else:
        assert json.loads((store.phase_dir(1) / "rm_eval.json").read_text())["heldout_pairs"] >= 1
    for f in OWN_FILES[name]:
        assert (store.phase_dir(1) / f).is_file(), f
    rows = [m for m in store.read_metrics() if m["phase"] == TRAINING and "loss" in m]
    assert len(rows) == 1 and rows[0]["iter"] == 1
    assert (SCORING in out) == get_stage(name).samples_for(req)
    # the key of each phase is a function of the stage's settings (IRS's too): changing one changes it
    sc = {**SETTINGS.get(name, {}), "eval_questions": 3}
    other = parse_request({**store.read_config()["request"], "stage_config": sc})
    assert phase_key(store, other, 1, TRAINING) != phase_key(store, req, 1, TRAINING)


def test_stage_settings_are_validated_by_the_stages_own_model(tmp_path):
    assert set(stage_names()) >= {"IRS", "ONPOLICY", "DPO", "KTO", "GRPO", "PPO", "RM"}
    assert (
        type(parse_request({"stage": "PPO", "stage_config": {"target_kl": 3}}).stage_config).__name__ == "PPOSettings"
    )
    with pytest.raises(
        ConfigError, match=r"stage_config\.beta: not a setting of stage PPO \(it belongs to DPO, KTO, GRPO\)"
    ):
        parse_request({"stage": "PPO", "stage_config": {"beta": 0.2}})
    with pytest.raises(ConfigError, match=r"stage_config\.target_kl: must be > 0"):  # no tag in the path
        parse_request({"stage": "PPO", "stage_config": {"target_kl": 0}})
    with pytest.raises(ConfigError, match=r"stage_config\.kto_up: kto_up and kto_down go together"):
        parse_request({"stage": "KTO", "stage_config": {"kto_up": str(tmp_path / "up.jsonl")}})
    with pytest.raises(ConfigError, match=r"stage_config\.pairs: stage DPO needs pairs files"):
        parse_request({"stage": "DPO", "stage_config": {"from_candidates": False}})


def test_requests_stored_before_the_split_still_load():
    # a job dir written when stage_config held every stage's fields, at their defaults
    for name in ("IRS", "DPO", "PPO"):
        stored = {"stage": name, "stage_config": {**PRE_SPLIT, "beta": 0.3} if name == "DPO" else PRE_SPLIT}
        req = TrainRequest.model_validate(stored_request(stored))
        assert req.stage == name and req.stage_config.eval_questions == 8
        dumped = req.model_dump(mode="json")["stage_config"]
        own = {"skip_margin", "keep_top", "keep_threshold"} if name == "IRS" else set()  # IRS's selection, added later
        assert "stage" not in dumped and set(dumped) <= set(PRE_SPLIT) | own
        if name == "DPO":
            assert req.stage_config.beta == 0.3


def test_irs_selection_settings_change_what_a_round_trains_on(tiny_model, data_dir):
    irs = {**CONC, "n_iterations": 1, "n_candidates": 4, "max_new_tokens": 16, "learning_rate": 5e-3, "batch_size": 4}
    rows = {}
    for name, sc in (
        ("best", {}),
        ("top2", {"keep_top": 2}),
        ("skip", {"skip_margin": 0.0, "keep_top": 3, "keep_threshold": 0.0}),
    ):
        store = create_job(tiny_request(tiny_model, n_questions=4, irs_config=irs, stage_config=sc))
        req = job_request(store)
        run_round(store, req)
        rows[name] = next(m for m in store.read_metrics() if m["phase"] == TRAINING and "loss" in m)
        if sc:  # a non-default selection is part of the training key (a changed setting retrains)
            assert phase_key(store, req, 1, TRAINING) != phase_key(
                store, parse_request({**store.read_config()["request"], "stage_config": {}}), 1, TRAINING
            )
    assert rows["best"]["examples"] <= 4 and "questions_used" not in rows["best"]
    assert (
        rows["top2"]["examples"] == 2 * rows["top2"]["questions_used"]
        and rows["top2"]["examples"] > rows["best"]["examples"]
    )
    # skip_margin 0: a question whose candidates all score the same (no signal) is left out
    assert rows["skip"]["questions_used"] <= 4 and rows["skip"]["examples"] <= 3 * rows["skip"]["questions_used"]


@pytest.mark.parametrize("name", ["IRS", "ONPOLICY", "DPO", "KTO", "GRPO", "PPO", "RM"])
def test_every_stages_request_passes_the_deployments_parameter_schema(name):
    """Prefect checks a deployment run's parameters against the flow's JSON schema before our own
    validation: a stored request of every stage must pass it (the API and the UI start jobs that way)."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    from flows.train import train_job

    schema = parameter_schema(train_job.fn).model_dump_for_openapi()
    assert "irs_config" in schema["definitions"]["TrainRequest"]["properties"]  # the wire name, not `shared`
    sc = {"DPO": {"beta": 0.2}, "PPO": {"target_kl": 3.0}, "IRS": {"keep_top": 2}}.get(name, {})
    irs = {"batch_size": 4, **({"n_iterations": 1} if name == "RM" else {})}
    body = parse_request({"stage": name, "stage_config": sc, "irs_config": irs}).model_dump(mode="json")
    assert validate({"request": body}, schema) == []
    assert validate({"request": {**body, "stage": 7}}, schema)  # the schema still checks what it can


def test_a_full_stage_config_loads_from_a_job_dir_but_not_as_a_new_request():
    """Only job dirs hold requests from before the split (``stored_request`` reads every one); a new
    request naming another stage's setting is refused, whatever its value."""
    stored = {"stage": "DPO", "stage_config": {**PRE_SPLIT, "beta": 0.3}}
    assert parse_request(stored_request(stored)).stage_config.beta == 0.3
    with pytest.raises(ConfigError, match=r"stage_config\.mix_ratio: not a setting of stage DPO \(it belongs to"):
        parse_request(stored)


def test_a_job_from_before_the_split_resumes_with_its_own_request(tiny_model, data_dir):
    from irsflow.jobs.job import open_or_create
    from irsflow.store import atomic_write_json

    body = tiny_request(tiny_model, n_questions=20)
    store = create_job(body)
    cfg = store.read_config()
    del cfg["request"]["heldout"]  # as written before held-out existed
    atomic_write_json(store.dir / "config.json", cfg)
    again, req = open_or_create(body, store.job_id)  # the same request, passed again (a retried run)
    assert again.job_id == store.job_id and req.heldout.share == 0 and not req.holds_out()
    with pytest.raises(Exception, match="different request"):
        open_or_create({**body, "seed": 99}, store.job_id)


@pytest.mark.parametrize("name", ["IRS", "PPO"])
def test_a_job_dir_in_the_old_layout_keys_every_phase_and_trusts_no_old_key(name, tiny_model, data_dir):
    """A finished job as an older irsflow left it: its request with every stage's fields in stage_config
    and no held-out block, status.json with current_iteration/total_iterations, manifests under the
    version-1 keys (irs-<phase>-<hash>). Every phase of every round still gets a key, and none of
    the old entries is trusted: each reads "inputs changed since it ran", so a rerun recomputes it."""
    from irsflow.jobs.job import job_status, load_job
    from irsflow.jobs.resume import outputs_valid, record_outputs, stage_phases
    from irsflow.jobs.rounds import run_job_local
    from irsflow.store import atomic_write_json

    store = create_job(
        tiny_request(
            tiny_model,
            stage=name,
            n_questions=4,
            heldout={"share": 0.0},
            irs_config={**CONC, "n_candidates": 2, "max_new_tokens": 8},
        )
    )
    torch.manual_seed(0)
    run_job_local(store, job_request(store))
    phases = stage_phases(job_request(store))
    for it in (1, 2):
        for phase in phases:
            record_outputs(store, it, phase, f"irs-{phase.lower()}-{'0' * 32}")
    cfg = store.read_config()
    request = {k: v for k, v in cfg["request"].items() if k != "heldout"}
    atomic_write_json(store.dir / "config.json", {**cfg, "request": {**request, "stage_config": PRE_SPLIT}})
    status = store.read_status()
    status["current_iteration"], status["total_iterations"] = status.pop("current_round"), status.pop("total_rounds")
    atomic_write_json(store.status_path, status)

    _, req = load_job(store.job_id)
    assert req.stage == name and req.heldout.share == 0 and stage_phases(req) == phases
    for it in (1, 2):
        for phase in phases:
            key = phase_key(store, req, it, phase)
            assert key.startswith(f"phase-{phase.lower()}-"), key
            assert outputs_valid(store, it, phase, key) == (False, "inputs changed since it ran")
    detail = job_status(store.job_id)["detail"]
    assert (detail["current_round"], detail["total_rounds"]) == (2, 2)
