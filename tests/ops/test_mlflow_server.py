"""The registry against a real `mlflow server` (mlflow 3.17 from the project's venv, SQLite backend,
its default artifact proxy with --artifacts-destination), started once per test session on
127.0.0.1: a job is tracked, gated and registered by `irsflow eval-gate`, promoted and served,
evaluated from `registry:champion`, and rolled back; every command's stdout parses as JSON.

How "the client does not share the server's disk" is proven. The server runs in a mount namespace
of its own (`unshare -m`) with a tmpfs over its artifact folder: the client (this test process)
sees that folder empty for the whole test, so every file it gets came through the server. Where
`unshare` is not allowed the test says so and falls back to showing that nothing the client does
reads that folder:
- the server hands out only `mlflow-artifacts:/...` URIs (experiment, run, model version source),
  and the server's artifact folder's path appears in nothing the client stores or returns;
- every adapter path the client returns, sends to vLLM or prints lies in the client's own cache
  dir, and its files equal the job's adapter byte for byte;
- the files reached the cache over HTTP: each download shows in the server's access log as
  `GET /api/2.0/mlflow-artifacts/artifacts/...`, and a second resolve adds no such request.
Promotion writing nothing into the finished run's artifacts is checked through the server too:
the run's `adapter` artifacts, downloaded, equal the job's adapter byte for byte.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from irsflow.release.adapter_cache import resolve_adapter
from irsflow.release.gate_run import EvalGateSettings, promote_and_deploy, register_job
from irsflow.release.registry import CHAMPION, Registry, TrackingSettings
from irsflow.store import hash_path
from tests.support.fake_vllm import FakeVLLM
from tests.support.jobs import job_with_random_adapter, mc_keyed_to
from tests.support.local import VENV_BIN, free_port
from tests.support.real_services import ServerProcess, http_ok

DOWNLOAD = re.compile(r'"GET /api/2\.0/mlflow-artifacts/artifacts/\S+ HTTP')


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with the artifact proxy (its default). Start-up (~25-50 s on 2 busy cores) is
    mostly imports and was the same with the defaults; one uvicorn worker instead of 4 and no job
    runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false) just leave fewer processes on shared cores.
    Yields (url, artifacts-destination, access log, whether the folder is hidden from the client)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    hidden = _can_hide_a_folder(root)
    if hidden:  # the server's own mount namespace: its artifacts live on a tmpfs only it sees
        argv = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs tmpfs "$0" && exec "$@"',
            str(artifacts),
            *argv,
        ]
    with ServerProcess(
        "mlflow",
        argv,
        http_ok(f"{url}/health"),
        timeout_s=180,
        cwd=root,
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    ) as srv:
        yield url, artifacts, srv.log_path, hidden


def _can_hide_a_folder(root: Path) -> bool:
    """Can this machine give a process a private mount namespace with a tmpfs (root, no seccomp veto)?"""
    probe = root / "probe"
    probe.mkdir()
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount -t tmpfs tmpfs "{probe}" && touch "{probe}/inside"',
        ],
        capture_output=True,
    )
    return r.returncode == 0 and not (probe / "inside").exists()


@pytest.fixture(scope="module")
def client(mlflow_server, prefect_server, tiny_model, tmp_path_factory):
    """A client data dir of its own, IRSFLOW_MLFLOW_URI at the server, a vLLM-shaped server."""
    url = mlflow_server[0]
    data = tmp_path_factory.mktemp("mlflow-client")
    saved = {k: os.environ.get(k) for k in ("IRSFLOW_DATA_DIR", "IRSFLOW_MLFLOW_URI")}
    os.environ.update({"IRSFLOW_DATA_DIR": str(data), "IRSFLOW_MLFLOW_URI": url})
    with FakeVLLM(base_model=str(tiny_model)) as vllm:
        yield data, vllm
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def downloads(log_path: Path) -> int:
    return len(DOWNLOAD.findall(log_path.read_text(errors="replace")))


def test_track_gate_promote_serve_and_roll_back_through_the_server(mlflow_server, client, tiny_model, tmp_path, capsys):
    from cli.main import main

    _, server_artifacts, server_log, hidden = mlflow_server
    data, vllm = client
    cache = data / "adapter_cache"
    a = job_with_random_adapter(tiny_model, 31)
    s = EvalGateSettings.model_validate(
        {
            "suites": {
                "mc_set": mc_keyed_to(tiny_model, a.checkpoint("final"), tmp_path / "mc_a.jsonl"),
                "mc_mode": "loglik",
                "heldout_n": 4,
                "max_new_tokens": 8,
                "scoring": {"backend": "heuristic"},
            },
            "gate": {"safety_tolerance": {"safety": 1.0}, "floors": {"distinct_2": 0.05}},
            "vllm": {"base_url": vllm.base_url, "serving_name": "assistant"},
        }
    )
    (tmp_path / "s.json").write_text(s.model_dump_json())
    capsys.readouterr()

    # tracked, registered, gated, promoted, served: stdout is the JSON and nothing else
    assert main(["eval-gate", "--job", a.job_id, "--settings", str(tmp_path / "s.json")]) == 0
    out, err = capsys.readouterr()
    r1 = json.loads(out)
    assert r1["promote"] and r1["champion_before"] is None and "View run" in err  # MLflow's links: stderr
    reg = Registry(s.tracking)
    v1 = r1["version"]
    mv = reg.version(CHAMPION)
    assert str(mv.version) == v1 and mv.source.startswith("mlflow-artifacts:/")
    assert reg.client.get_run(mv.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert reg.client.get_experiment(reg.experiment_id).artifact_location.startswith("mlflow-artifacts:")

    # what vLLM and evaluation got: the client's local copy, equal to the job's adapter
    v1_path = reg.adapter_path(v1)
    assert Path(v1_path).is_relative_to(cache) and not v1_path.startswith(str(server_artifacts))
    assert hash_path(Path(v1_path)) == hash_path(a.checkpoint("final"))
    assert vllm.adapters == {"assistant": v1_path} and r1["deployed"]["path"] == v1_path
    assert str(server_artifacts) not in out and str(server_artifacts) not in json.dumps(
        [mv.source, reg.client.get_run(mv.run_id).info.artifact_uri]
    )
    assert register_job(s, a) == v1  # a retried gate gets its version back (run id looked up on the server)
    gate_run = data / "evals" / "irsflow-adapter" / f"gate_run_{r1['gate_run']}"
    assert json.loads((gate_run / "challenger.json").read_text())["adapter"] == v1_path

    # promotion wrote nothing into the finished run: the card is the version's description and a file
    import mlflow

    run_copy = Path(
        mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path="adapter", tracking_uri=reg.uri, dst_path=str(tmp_path / "run-adapter")
        )
    )
    assert hash_path(run_copy) == hash_path(a.checkpoint("final"))  # PEFT's own README.md included, unchanged
    assert "**promoted to champion**" in reg.version(v1).description
    assert "**promoted to champion**" in (cache / "irsflow-adapter" / "cards" / f"v{v1}.md").read_text()

    # resolving again does not download again; a fresh cache downloads once through the proxy
    before = downloads(server_log)
    assert before > 0
    assert (
        resolve_adapter("registry:champion")
        == resolve_adapter(f"registry:{v1}")
        == resolve_adapter("models:/irsflow-adapter@champion")
        == v1_path
    )
    assert downloads(server_log) == before
    other = TrackingSettings(cache_dir=str(tmp_path / "other-cache"))
    fresh = resolve_adapter("models:/irsflow-adapter@champion", other)
    assert Path(fresh).is_relative_to(tmp_path / "other-cache") and hash_path(Path(fresh)) == hash_path(Path(v1_path))
    assert downloads(server_log) > before
    after = downloads(server_log)
    assert resolve_adapter(f"models:/irsflow-adapter/{v1}", other) == fresh and downloads(server_log) == after
    assert not [p for p in (tmp_path / "other-cache" / "irsflow-adapter").iterdir() if p.name.startswith(".")]

    # `irsflow eval` from the registry: pure JSON, the local copy evaluated
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_model),
                "--adapter",
                "registry:champion",
                "--samples",
                "4",
                "--settings",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    ev = json.loads(capsys.readouterr().out)
    assert json.loads(Path(ev["file"]).read_text())["adapter"] == v1_path
    assert reg.client.get_run(ev["mlflow_run_id"]).info.status == "FINISHED"

    # a second champion (registered and promoted through the server), then rollback
    b = job_with_random_adapter(tiny_model, 32)
    v2 = register_job(s, b)
    deployed = promote_and_deploy(
        s,
        {
            "version": v2,
            "gate_run": 2,
            "date": "2026-12-02",
            "metrics": {},
            "promote": True,
            "reasons": ["test promotion"],
        },
        v1_path,
    )
    v2_path = reg.adapter_path(v2)
    assert deployed["path"] == v2_path and vllm.adapters == {"assistant": v2_path}
    assert hash_path(Path(v2_path)) == hash_path(b.checkpoint("final")) and str(reg.version(CHAMPION).version) == v2
    capsys.readouterr()
    assert main(["rollback", "--settings", str(tmp_path / "s.json")]) == 0
    rb = json.loads(capsys.readouterr().out)
    assert (rb["from"], rb["to"], rb["path"]) == (v2, v1, v1_path)
    assert str(reg.version(CHAMPION).version) == v1 and vllm.adapters == {"assistant": v1_path}
    assert reg.version(v2).tags["rolled_back"] == "true"
    if hidden:  # the client never saw a file of the server's artifact store
        assert not any(server_artifacts.iterdir())
    else:
        print("unshare not allowed here: the server's artifact folder was visible to the client (see docstring)")


def test_irsflow_train_tracked_on_the_server_keeps_mlflow_links_off_stdout(
    mlflow_server, client, tiny_model, tmp_path, capsys
):
    from cli.main import main
    from tests.support.jobs import tiny_request

    req = tmp_path / "req.json"
    req.write_text(json.dumps(tiny_request(tiny_model, track=True, irs_config={"n_iterations": 1})))
    capsys.readouterr()
    assert main(["train", "--request", str(req)]) == 0
    out, err = capsys.readouterr()
    assert "View run" in err and "View run" not in out and "/#/experiments/" not in out
    job_id = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("job_id: "))
    from irsflow.jobs.job import open_job

    run = Registry(TrackingSettings()).client.get_run(open_job(job_id).read_status()["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
