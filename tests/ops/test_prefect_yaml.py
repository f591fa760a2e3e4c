"""prefect.yaml deploys against a real server: every deployment exists with a resolvable entrypoint,
a parameter schema that builds, the right pool, and the weekly cron schedule with its timezone."""

import yaml
from prefect import get_client
from prefect.flows import load_flow_from_entrypoint

from irsflow.config import TrainRequest
from tests.support.local import ROOT

SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_every_entrypoint_is_a_flow_whose_parameters_build():
    assert {d["name"] for d in SPEC["deployments"]} >= {
        "manual",
        "weekly-job",
        "redo",
        "feedback-etl",
        "teacher-labelling",
        "teacher-quality-check",
        "eval-gate",
        "onpolicy-rounds",
        "dpo-pairs",
        "grpo",
        "ppo-rlaif",
        "reward-model",
        "weekly",
    }
    stages = {d["parameters"]["request"]["stage"] for d in SPEC["deployments"] if "request" in d.get("parameters", {})}
    assert stages == {"IRS", "ONPOLICY", "DPO", "GRPO", "PPO", "RM"}  # KTO: the DPO deployment with stage KTO
    for dep in SPEC["deployments"]:
        path, name = dep["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
        assert flow.parameters.model_dump()["properties"], dep["name"]
        assert dep["work_pool"]["name"] in ("gpu", "cpu")
        if "request" in dep.get("parameters", {}):
            TrainRequest.model_validate(dep["parameters"]["request"])  # defaults are valid requests


def test_the_stack_deployed_everything(stack):
    with get_client(sync_client=True) as client:
        pools = {p.name: p for p in client.read_work_pools()}
        assert pools["gpu"].type == "process" and pools["gpu"].concurrency_limit == 1
        assert pools["cpu"].type == "process"
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit >= 1
        assert client.read_automations_by_name("irsflow: crash flow runs whose heartbeats stopped")
        for dep in SPEC["deployments"]:
            flow_name = load_flow_from_entrypoint(
                f"{ROOT / dep['entrypoint'].split(':')[0]}:{dep['entrypoint'].split(':')[1]}"
            ).name
            d = client.read_deployment_by_name(f"{flow_name}/{dep['name']}")
            assert d.work_pool_name == dep["work_pool"]["name"] and d.entrypoint == dep["entrypoint"]
            assert d.parameter_openapi_schema["properties"], dep["name"]
            if dep["name"] == "weekly":
                (sched,) = d.schedules
                assert sched.schedule.cron == "30 3 * * 1" and sched.schedule.timezone == "Asia/Shanghai"
                assert sched.active and d.parameters == {}  # the defaults of WeeklySettings
            if dep["name"] == "weekly-job":
                assert not d.schedules and d.parameters["request"]["irs_config"]["n_iterations"] == 3
