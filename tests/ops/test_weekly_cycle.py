"""The weekly cycle through the real Prefect server and a worker (the `weekly-cycle/weekly`
deployment), on the tiny model, with Langfuse, the OpenAI-compatible teacher and vLLM as local
HTTP servers speaking their wire formats: new feedback is extracted, the teacher is called once per
new rated answer, a challenger is registered and gated with its numbers recorded, and the promoted
adapter is hot-loaded. The cycle's process is then killed mid-training and the run retried: no
teacher call, no Langfuse extraction and no finished phase is repeated. A week with nothing new
evaluates the champion, registers nothing, and says so."""

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from prefect import get_client
from prefect.blocks.system import Secret
from prefect.deployments import run_deployment

from irsflow.codebook.store import Codebook
from irsflow.release.registry import CHAMPION, Registry, TrackingSettings
from irsflow.store import JobStore
from tests.support.fake_langfuse import FakeLangfuse
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_vllm import FakeVLLM
from tests.support.jobs import tiny_request
from tests.support.local import ROOT, VENV_BIN
from tests.support.prefect_runs import task_runs_after, wait_crashed

NOW = datetime.now(UTC)
FEEDBACK = [
    ("Why is the sky blue?", "Because of Rayleigh scattering of sunlight.", "up"),
    ("Why is the sky blue?", "It is painted.", "down"),
    ("How do vaccines work?", "They are magic.", "down"),
    ("What is photosynthesis?", "Plants turning light into sugar.", "up"),
    ("My chest hurts and my left arm is numb, what should I do?", "Sleep it off.", "down"),
    ("How many legs does a spider have?", "Six.", "down"),
]
BLOCKS = {"langfuse-public-key": "pk-lf-weekly", "langfuse-secret-key": "sk-lf-weekly", "teacher-api-key": "sk-teach"}


def chat(q):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]


@pytest.fixture(scope="module")
def services(stack):
    """Fake Langfuse/teacher/vLLM and the Secret blocks the worker's runs read the keys from."""
    with (
        FakeLangfuse(public_key=BLOCKS["langfuse-public-key"], secret_key=BLOCKS["langfuse-secret-key"]) as lf,
        FakeOpenAI(api_key=BLOCKS["teacher-api-key"]) as teacher,
        FakeVLLM() as vllm,
    ):
        t = NOW - timedelta(hours=3)
        for i, (q, a, label) in enumerate(FEEDBACK):
            lf.add_trace(t, chat(q), a, id=f"w{i}")
            lf.add_score(f"w{i}", label, t + timedelta(minutes=1), data_type="CATEGORICAL")
            t += timedelta(minutes=2)
        for name, value in BLOCKS.items():
            Secret(value=value).save(name, overwrite=True)
        try:
            yield lf, teacher, vllm
        finally:
            for name in BLOCKS:  # other tests expect no teacher key
                Secret.delete(name)


def settings(tiny_model, lf, teacher, vllm) -> dict:
    req = tiny_request(
        tiny_model,
        codebook={"enabled": True},
        irs_config={
            "n_iterations": 2,
            "n_candidates": 6,
            "max_new_tokens": 32,
            "learning_rate": 1e-2,
            "sft_epochs": 6,
            "batch_size": 2,
            "dw_config": {"initial_weights": {"conc": 1.0}},
        },
    )
    return {
        "feedback": {
            "langfuse": {"host": lf.url, "score_data_type": "CATEGORICAL", "up_values": ["up"], "down_values": ["down"]}
        },
        "prompts": {"n": 10, "min_high_risk_share": 0.4},
        "teacher": {"base_url": teacher.base_url, "model": "deepseek-v4-flash", "max_retries": 1, "backoff_s": 0.1},
        "request": req,
        "gate": {
            "suites": {
                "mc_set": None,
                "safety_set": None,
                "heldout_set": "builtin:demo",
                "heldout_n": 8,
                "rewards": {"conc": 1.0},
                "max_new_tokens": 32,
                "top_k": 2,
            },
            "gate": {"primary_metric": "reward", "safety_tolerance": {}, "floors": {}, "n_boot": 1000},
            "vllm": {"base_url": vllm.base_url, "timeout_s": 10},
        },
    }


def wait_final(run_id, timeout=600):
    with get_client(sync_client=True) as client:
        deadline = time.time() + timeout
        while not (state := client.read_flow_run(run_id).state).is_final():
            assert time.time() < deadline, state
            time.sleep(1)
    return state


@pytest.mark.slow
def test_weekly_cycle_closes_the_loop_then_resumes_after_a_kill(stack, services, tiny_model):
    lf, teacher, vllm = services
    os.environ["IRSFLOW_DATA_DIR"] = str(stack["data_dir"])
    rule = Codebook().add(
        "Explain Rayleigh scattering when asked why the sky is blue.",
        ["sky", "blue"],
        ["Why is the sky blue?"],
        source="review",
        author="test",
    )
    run = run_deployment(
        "weekly-cycle/weekly", parameters={"settings": settings(tiny_model, lf, teacher, vllm)}, timeout=0
    )
    # find the cycle's training job, then kill the cycle's process in iteration 2's SFT
    deadline = time.time() + 300
    store = None
    while time.time() < deadline:
        jobs = sorted((stack["data_dir"] / "jobs").glob("train_*")) if (stack["data_dir"] / "jobs").exists() else []
        cands = [JobStore(p.name) for p in jobs if (p / "status.json").exists()]
        store = next(
            (
                s
                for s in cands
                if s.read_status().get("flow_run_id")
                and s.read_config()["request"]["dataset"].endswith("prompts.jsonl")
            ),
            None,
        )
        if store and (s := store.read_status()).get("current_round") == 2 and s.get("current_phase") == "TRAINING":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"never reached iteration 2 SFT: {store and store.read_status()}")
    cycle_id = store.job_id
    calls_before = teacher.count
    assert calls_before == len(FEEDBACK)  # one teacher call per new rated answer
    lf_requests = sum(lf.counts.values())
    os.kill(s["pid"], signal.SIGKILL)
    wait_crashed(run.id, stack["procs"]["worker-gpu"]["log"])
    assert not store.checkpoint(2).exists() and not vllm.loads()

    retried_at = datetime.now(UTC)
    for _attempt in range(3):  # a late second Crashed report of the worker can overwrite a retry (see test_stack)
        out = subprocess.run(
            [str(VENV_BIN / "prefect"), "flow-run", "retry", str(run.id)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        state = wait_final(run.id)
        if state.type.value != "CRASHED" or "SIGKILL" not in (state.message or ""):
            break
    assert state.is_completed(), state
    assert teacher.count == calls_before, "the retry re-billed teacher calls"
    assert sum(lf.counts.values()) == lf_requests, "the retry extracted from Langfuse again"
    states = task_runs_after(cycle_id, retried_at)
    assert states == {
        "generate-iter-1": "Cached",
        "score-iter-1": "Cached",
        "sft-iter-1": "Cached",
        "generate-iter-2": "Cached",
        "score-iter-2": "Cached",
        "sft-iter-2": "Completed",
    }, states

    report = json.loads((stack["data_dir"] / "weekly" / cycle_id / "report.json").read_text())
    assert report["cycle_id"] == cycle_id and report["came_in"] == {
        "etl_run": cycle_id,
        "traces": 6,
        "thumbs_up": 2,
        "thumbs_down": 4,
        "corrections": 0,
    }
    assert report["prompts"]["n_prompts"] == 10 and report["prompts"]["high_risk"] >= 4
    assert report["prompts"]["by_source"]["thumbs_down"] == 4  # every new question (the pair's counts once)
    assert report["cost"]["teacher_calls"] == len(FEEDBACK) and report["cost"]["gpu_minutes"] > 0
    assert report["cost"]["teacher_usd"] > 0  # priced from the usage ledger of the labelling run
    g = report["gate"]
    print(f"weekly cycle {cycle_id}: {report['outcome']}; gate {g['reasons']}; cost {report['cost']}")
    assert g["version"] == "1" and g["gate_run"] == 1 and "reward_mean" in g["table"] and g["reasons"]
    reg = Registry(TrackingSettings())
    mv = reg.version(g["version"])
    assert mv.tags["job_id"] == cycle_id and mv.tags["gate.promote"] == str(g["promote"]).lower()
    assert json.loads(mv.tags["gate.numbers"])["primary"]["mean_diff"] is not None
    # conc rewards stopping early, which the tiny model learns in two iterations (gain +0.08, CI above 0)
    assert g["promote"] and reg.version(CHAMPION).version == 1
    assert [b["lora_path"] for b in vllm.loads()] == [reg.adapter_path("1")]
    assert report["served"]["vllm_adapter"] == reg.adapter_path("1")
    rows = [json.loads(x) for x in (store.phase_dir(1) / "candidates.jsonl").read_text().splitlines()]
    sky = next(r for r in rows if r["question"] == "Why is the sky blue?")
    assert sky["codebook"]["rule_ids"] == [rule.id] and "Rayleigh" in sky["prompt"][0]["content"]
    md = (stack["data_dir"] / "weekly" / cycle_id / "report.md").read_text()
    assert "## What came in" in md and "| reward_mean |" in md and "sk-teach" not in md
    with get_client(sync_client=True) as client:
        art = client.read_artifacts()
    assert any(a.key == "weekly-cycle" and cycle_id in (a.description or "") for a in art)

    # a week with no new feedback: the champion is evaluated, nothing is registered
    versions = len(reg.client.search_model_versions(f"name='{reg.s.model_name}'"))
    run2 = run_deployment(
        "weekly-cycle/weekly", parameters={"settings": settings(tiny_model, lf, teacher, vllm)}, timeout=0
    )
    assert wait_final(run2.id).is_completed()
    rid2 = next(p.name for p in (stack["data_dir"] / "weekly").iterdir() if p.name != cycle_id)
    report2 = json.loads((stack["data_dir"] / "weekly" / rid2 / "report.json").read_text())
    assert report2["training"] is None and report2["outcome"].startswith("No new feedback")
    assert len(reg.client.search_model_versions(f"name='{reg.s.model_name}'")) == versions
    assert teacher.count == calls_before and len(vllm.loads()) == 1
    assert report2["champion_eval"]["reward_mean"] > 0 and "champion version 1 evaluated" in report2["outcome"]
