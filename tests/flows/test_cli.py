"""The irsflow command end to end, as a user runs it (subprocesses against the test server)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.jobs import tiny_request
from tests.support.local import ROOT

IRSFLOW = [sys.executable, "-m", "cli"]


def run_cli(args, data_dir, timeout=600):
    env = {**os.environ, "IRSFLOW_DATA_DIR": str(data_dir)}
    return subprocess.run(IRSFLOW + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "irsflow"
    out = subprocess.run([str(exe), "rewards"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and {"rel", "faith", "conc", "ref"} <= set(out.stdout.split())


def test_train_status_metrics(prefect_server, tiny_model, tmp_path):
    req = write(tmp_path, "req.json", tiny_request(tiny_model))
    out = run_cli(["train", "--request", str(req)], tmp_path / "data")
    assert out.returncode == 0, out.stderr[-3000:]
    job_id = next(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("job_id: "))
    assert "iter 1: avg_reward=" in out.stdout and "iter 2: avg_reward=" in out.stdout
    assert "weights: rel=" in out.stdout and f"train_{job_id}" in out.stdout

    st = run_cli(["status", job_id], tmp_path / "data")
    status = json.loads(st.stdout)
    assert status["state"] == "completed" and status["detail"]["current_round"] == 2
    assert set(status["detail"]) >= {"current_phase", "phase_progress", "metrics", "runtime", "total_rounds"}
    assert set(status["detail"]["runtime"]) == {"device", "unsloth_available", "gpu_mem_used"}
    assert status["detail"]["metrics"]["current_weights"].keys() == {"rel", "faith", "conc"}

    m = run_cli(["metrics", f"train_{job_id}"], tmp_path / "data")
    rows = json.loads(m.stdout)
    assert isinstance(rows, list) and [r["iter"] for r in rows if r["phase"] == "METRICS"] == [1, 2]


def test_malformed_question_set_fails_before_anything_runs(tiny_model, tmp_path):
    qs = write(tmp_path, "qs.jsonl", '{"question": "fine?"}\n{"question": "broken"\n')
    req = write(tmp_path, "req.json", tiny_request(tiny_model, dataset=str(qs)))
    out = run_cli(["train", "--request", str(req)], tmp_path / "data")
    assert out.returncode == 2
    assert f"{qs}:2: malformed JSON" in out.stderr
    assert not (tmp_path / "data" / "jobs").exists()


def test_invalid_request_names_the_field(tmp_path):
    req = write(tmp_path, "req.json", {"irs_config": {"n_candidates": 1, "bogus": True}})
    out = run_cli(["train", "--request", str(req)], tmp_path / "data")
    assert out.returncode == 2
    assert "irs_config.n_candidates: must be >= 2" in out.stderr and "irs_config.bogus: unknown field" in out.stderr
    v = run_cli(["validate", "--request", str(req)], tmp_path / "data")
    assert v.returncode == 2 and "irs_config.n_candidates" in v.stderr


def test_unknown_job_and_missing_model(tiny_model, tmp_path):
    out = run_cli(["status", "nope"], tmp_path / "data")
    assert out.returncode == 2 and "no job 'nope'" in out.stderr
    req = write(tmp_path, "req.json", tiny_request(tmp_path / "no-such-model"))
    out = run_cli(["validate", "--request", str(req)], tmp_path / "data")
    assert out.returncode == 2 and "model_id: no such model folder" in out.stderr


def test_rerun_from_an_iteration_the_job_does_not_have_is_refused(tiny_model, data_dir):
    from irsflow.jobs.job import create_job

    store = create_job(tiny_request(tiny_model, irs_config={"n_iterations": 1}))
    store.update_status(state="failed", error="JSONDecodeError: ...")  # a rerun's usual starting point
    before = store.status_path.read_bytes()
    for bad in ("5", "0"):
        out = run_cli(
            ["rerun", store.job_id, "--from-phase", "SCORING", "--from-iteration", bad], data_dir, timeout=300
        )
        assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-3000:])
        assert (f"job {store.job_id} has rounds 1..1; --from-iteration {bad} is outside them") in out.stderr
        assert "Traceback" not in out.stderr
    assert store.status_path.read_bytes() == before  # nothing ran: the job was not touched
    assert not (store.dir / "phases").exists()


def test_failed_job_reports_failed_and_keeps_its_files(prefect_server, tiny_model, tmp_path):
    # Prompts longer than max_seq_length leave SFT nothing to learn: the job fails in TRAINING.
    req = write(tmp_path, "req.json", tiny_request(tiny_model, irs_config={"max_seq_length": 16, "n_iterations": 1}))
    out = run_cli(["train", "--request", str(req)], tmp_path / "data")
    assert out.returncode == 1
    assert "irs_config.max_seq_length" in out.stderr
    job_id = next(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("job_id: "))
    status = json.loads(run_cli(["status", job_id], tmp_path / "data").stdout)
    assert status["state"] == "failed" and "max_seq_length" in status["error"]
    assert status["detail"]["current_phase"] == "TRAINING"
    job = tmp_path / "data" / "jobs" / f"train_{job_id}"
    assert (job / "phases" / "iter_1" / "candidates.jsonl").stat().st_size > 0
    assert (job / "samples.jsonl").stat().st_size > 0 and (job / "config.json").exists()
    assert "max_seq_length" in (job / "train.log").read_text()


def test_temporary_prefect_server_that_does_not_start_says_to_start_the_stack(tiny_model, tmp_path):
    """No PREFECT_API_URL, no local stack: Prefect starts its temporary server. A start-up budget of
    0 s stands in for a machine too busy to start it in time: the command says what to do, no traceback."""
    req = write(tmp_path, "req.json", tiny_request(tiny_model, irs_config={"n_iterations": 1}))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        IRSFLOW_DATA_DIR=str(tmp_path / "data"),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0",
    )
    out = subprocess.run(
        IRSFLOW + ["train", "--request", str(req)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 3, (out.stdout[-2000:], out.stderr[-3000:])
    assert "make up" in out.stderr and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


def test_temporary_server_start_up_budget_defaults_to_two_minutes():
    code = (
        "import os, cli.main as c; c.main(['rewards']); "
        "from prefect.settings import get_current_settings as g; "
        "print(os.environ[c.EPHEMERAL_TIMEOUT_ENV], g().server.ephemeral.startup_timeout_seconds)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["120", "120"]
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"  # the user's value wins
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["300", "300"]
