"""prefect.yaml parses and every entrypoint resolves to a Prefect flow whose parameters build."""
from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_entrypoint_is_a_flow():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert spec["deployments"]
    for dep in spec["deployments"]:
        path, name = dep["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
        schema = flow.parameters.model_dump()
        assert "request" in schema["properties"], dep["name"]
        assert dep["work_pool"]["name"] in ("gpu", "cpu")
