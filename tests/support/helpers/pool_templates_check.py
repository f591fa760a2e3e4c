"""The Docker and Kubernetes work-pool templates (deployments/pools/*.json) and the deployments that
target them (deployments/prefect.{docker,k8s}.yaml), checked with Prefect's own code, no server:

- the template passes the server's WorkPoolCreate validation and its defaults the server's
  job-variable validation (prefect/server/api/validation.py), and keeps every variable and
  job_configuration key of the worker's default template;
- every deployment's job_variables validate against the pool's variables schema, required keys
  included (what the server checks when a flow run is created);
- the worker builds its job configuration from template + variables, then the flow-run container
  (docker: prefect-docker's own container settings, turned into docker-py's create arguments and
  HostConfig) or the Job manifest (kubernetes: deserialized into kubernetes_asyncio's V1Job).

It needs prefect-docker and prefect-kubernetes, which live in the dockertools venv
(infra/install_docker_tools.sh), so tests/ops/test_docker_files.py runs it there:
    .venvs/dockertools/bin/python tests/support/helpers/pool_templates_check.py   -> JSON facts on stdout
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# The worker passes its own Prefect settings to flow runs; a compose-style API URL keeps
# prefect-docker from asking a Docker engine for its version (it does for localhost URLs).
os.environ.update(
    {"PREFECT_API_URL": "http://prefect-server:4200/api", "PREFECT_HOME": tempfile.mkdtemp(prefix="pool-check-")}
)

import yaml  # noqa: E402
from docker.models.containers import _create_container_args  # noqa: E402
from kubernetes_asyncio.client import ApiClient, V1Job  # noqa: E402
from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect.server.api.validation import _validate_work_pool_job_variables  # noqa: E402
from prefect.server.schemas.actions import WorkPoolCreate  # noqa: E402
from prefect_docker.worker import DockerWorker  # noqa: E402
from prefect_kubernetes.worker import KubernetesWorker  # noqa: E402

KINDS = {
    "docker": (DockerWorker, "deployments/prefect.docker.yaml"),
    "k8s": (KubernetesWorker, "deployments/prefect.k8s.yaml"),
}


async def load_template(kind: str, side: str) -> dict:
    worker = KINDS[kind][0]
    name = f"{kind}-{side}"
    template = json.loads((ROOT / "deployments" / "pools" / f"{name}.json").read_text())
    WorkPoolCreate(name=name, type=worker.type, base_job_template=template)
    await _validate_work_pool_job_variables(None, name, template, ignore_required=True, ignore_invalid_defaults=False)
    default = worker.get_default_base_job_template()
    lost = set(default["variables"]["properties"]) - set(template["variables"]["properties"])
    assert not lost, f"{name}.json lost the worker's variables {sorted(lost)}"
    lost = set(default["job_configuration"]) - set(template["job_configuration"])
    assert not lost, f"{name}.json lost the worker's job_configuration keys {sorted(lost)}"
    return template


async def docker_container(template: dict, job_variables: dict) -> dict:
    cfg = await DockerWorker.job_configuration.from_template_and_values(template, job_variables)
    cfg.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="check"))
    settings = DockerWorker(work_pool_name="check")._build_container_settings(None, cfg)
    args = _create_container_args({**settings, "version": "1.44"})  # raises on any unknown argument
    return {
        "image": args["image"],
        "env": args["environment"],
        "volumes": args["host_config"].get("Binds"),
        "network": args["host_config"].get("NetworkMode"),
        "device_requests": args["host_config"].get("DeviceRequests"),
        "auto_remove": args["host_config"].get("AutoRemove", False),
    }


async def k8s_job(template: dict, job_variables: dict) -> dict:
    cfg = await KubernetesWorker.job_configuration.from_template_and_values(template, job_variables)
    cfg.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="check"))
    manifest = cfg.job_manifest

    class _Response:  # ApiClient.deserialize takes an HTTP response; it reads .data only
        data = json.dumps(manifest)

    async with ApiClient() as api:
        job = api.deserialize(_Response(), "V1Job")
    assert isinstance(job, V1Job) and job.kind == "Job", manifest
    pod = job.spec.template.spec
    container = pod.containers[0]
    return {
        "image": container.image,
        "limits": container.resources.limits,
        "env": {e.name: e.value for e in container.env or []},
        "mounts": {m.mount_path: m.name for m in container.volume_mounts or []},
        "claims": {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes or []},
        "tolerations": [t.key for t in pod.tolerations or []],
        "run_as_user": pod.security_context.run_as_user if pod.security_context else None,
    }


async def main() -> None:
    facts: dict = {}
    for kind, (_worker, deployments_file) in KINDS.items():
        templates = {side: await load_template(kind, side) for side in ("gpu", "cpu")}
        spec = yaml.safe_load((ROOT / deployments_file).read_text())
        built: dict[str, dict] = {}  # deployments sharing a pool and job variables build the same job
        for dep in spec["deployments"]:
            pool = dep["work_pool"]["name"]
            side = pool.split("-")[0]
            assert pool == f"{side}-{kind}", f"{deployments_file}: {dep['name']} targets pool {pool!r}"
            variables = dep["work_pool"].get("job_variables") or {}
            key = pool + json.dumps(variables, sort_keys=True)
            if key not in built:
                await _validate_work_pool_job_variables(
                    None, pool, templates[side], variables, ignore_required=False, ignore_invalid_defaults=False
                )
                build = docker_container if kind == "docker" else k8s_job
                built[key] = {"pool": pool, **await build(templates[side], variables)}
            facts[f"{kind}/{dep['name']}"] = built[key]
    json.dump(facts, sys.stdout, default=str)


if __name__ == "__main__":
    asyncio.run(main())
