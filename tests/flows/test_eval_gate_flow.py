"""The eval-gate flow through Prefect on the tiny model, real MLflow on SQLite and a vLLM-shaped
server on 127.0.0.1: register -> evaluate champion and challenger -> gate -> promote -> hot-load,
a gate run that does not promote, a deploy failure that keeps the old adapter served and the registry
as it was (first-ever and later promotions), a transient serving error retried by the deploy task,
rollback, and a broken adapter that never reaches the registry.

Multiple-choice answers of a random tiny model mean nothing, so each test set's answer key is one
adapter's own log-likelihood picks: that adapter is, by construction, clearly better than the rest.
"""

import json
import os
from pathlib import Path

import httpx
import pytest

from irsflow.errors import InputError
from irsflow.release.gate_run import EvalGateSettings, ServingError, promote_and_deploy, register_job
from irsflow.release.registry import CHALLENGER, CHAMPION, Registry
from irsflow.retry import failure_kind
from irsflow.store import hash_path
from tests.support.fake_vllm import FakeVLLM
from tests.support.jobs import job_with_random_adapter, mc_keyed_to
from tests.support.local import free_port


@pytest.fixture(scope="module")
def env(prefect_server, tiny_model, tmp_path_factory):
    data = tmp_path_factory.mktemp("gatedata")
    saved = os.environ.get("IRSFLOW_DATA_DIR")
    os.environ["IRSFLOW_DATA_DIR"] = str(data)
    with FakeVLLM(base_model=str(tiny_model)) as vllm:
        yield data, vllm
    if saved is None:
        os.environ.pop("IRSFLOW_DATA_DIR", None)
    else:
        os.environ["IRSFLOW_DATA_DIR"] = saved


def deploy_runs(api: str, flow_run_id) -> list[int]:
    """How many times each promote-deploy task of a flow run ran (retries included)."""
    runs = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [str(flow_run_id)]}}}).json()
    return [r["run_count"] for r in runs if r["name"].startswith("promote-deploy")]


def settings(vllm, mc_set: str) -> EvalGateSettings:
    return EvalGateSettings.model_validate(
        {
            "suites": {
                "mc_set": mc_set,
                "mc_mode": "loglik",
                "heldout_n": 4,
                "max_new_tokens": 8,
                "scoring": {"backend": "heuristic"},
            },
            # a random model's safety answers are noise: this test is about the flow, the gate's
            # safety rule has its own tests
            "gate": {"safety_tolerance": {"safety": 1.0}, "floors": {"distinct_2": 0.05}},
            "vllm": {"base_url": vllm.base_url, "serving_name": "assistant"},
        }
    )


def test_gate_runs_promote_keep_fail_and_roll_back(env, tiny_model, tmp_path, prefect_server, capsys):
    data, vllm = env
    from cli.main import main
    from flows.eval_gate import eval_gate

    a = job_with_random_adapter(tiny_model, 11)
    s_a = settings(vllm, mc_keyed_to(tiny_model, a.checkpoint("final"), tmp_path / "mc_a.jsonl"))

    # gate run 1: A vs the base model -> promoted, hot-loaded, card + changelog
    state = eval_gate(job_id=a.job_id, settings=s_a, return_state=True)
    r1 = state.result()
    assert r1["promote"] and r1["version"] == "1" and r1["champion_before"] is None
    reg = Registry(s_a.tracking)
    v1_path = reg.adapter_path("1")
    assert str(reg.version(CHAMPION).version) == "1"
    assert vllm.adapters == {"assistant": v1_path}
    assert [b["model"] for p, b in vllm.calls if p == "/v1/chat/completions"] == ["assistant"]
    tags = reg.version("1").tags
    assert tags["gate.promote"] == "true" and json.loads(tags["gate.numbers"])["primary"]["ci_low"] > 0
    assert tags["job_id"] == a.job_id and tags["base_model"] == str(tiny_model)
    # the card: the version's description and a file beside the cache; the run's artifacts untouched
    assert "**promoted to champion**" in reg.version("1").description
    assert "**promoted to champion**" in (data / "adapter_cache" / "irsflow-adapter" / "cards" / "v1.md").read_text()
    run_dir = data / "mlflow" / "artifacts" / reg.version("1").run_id / "artifacts" / "adapter"
    assert hash_path(run_dir) == hash_path(a.checkpoint("final")) == hash_path(Path(v1_path))  # as logged
    assert v1_path.startswith(str(data / "adapter_cache"))  # vLLM gets the local copy, not the artifact
    run1 = json.loads((data / "evals" / "irsflow-adapter" / "gate_run_1" / "gate_run_1.json").read_text())
    assert r1["gate_run"] == 1 and run1["gate_run"] == 1 and tags["gate.run"] == "1"
    assert run1["gate"]["promote"] and run1["challenger"]["dialogue"]["n_turns"] == 4
    arts = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(state.state_details.flow_run_id)]}}},
    ).json()
    assert any(x["key"] == "eval-gate" and "**PROMOTED**" in x["data"] for x in arts)

    # gate run 2: B on A's key -> worse than the champion -> not promoted, nothing loaded
    b = job_with_random_adapter(tiny_model, 12)
    loads = len(vllm.loads())
    r2 = eval_gate(job_id=b.job_id, settings=s_a)
    assert not r2["promote"] and r2["champion_before"] == "1"
    assert str(reg.version(CHAMPION).version) == "1" and str(reg.version(CHALLENGER).version) == "2"
    assert len(vllm.loads()) == loads and reg.version("2").tags["gate.promote"] == "false"

    # gate run 3: C on its own key wins, but vLLM answers the load with 404 (as a server without runtime
    # LoRA updating does) -> the run fails with that error, not retried; A stays served, the
    # registry is as it was before the gate run
    c = job_with_random_adapter(tiny_model, 13)
    s_c = settings(vllm, mc_keyed_to(tiny_model, c.checkpoint("final"), tmp_path / "mc_c.jsonl"))
    history = reg.champion_history()
    vllm.fail_next = {"/v1/load_lora_adapter": 404}
    loads = len(vllm.loads())
    with pytest.raises(ServingError, match="HTTP 404") as failed:
        eval_gate(job_id=c.job_id, settings=s_c)
    assert failure_kind(failed.value) == "fatal" and "no previous champion" not in str(failed.value)
    assert len(vllm.loads()) == loads + 1  # a 404 is not retried
    assert vllm.adapters == {"assistant": v1_path} and str(reg.version(CHAMPION).version) == "1"
    assert reg.champion_history() == history == ["1"] and "rolled_back" not in reg.version("1").tags

    # gate run 4: the same version again; vLLM busy once (503) -> the deploy task retries -> promoted
    vllm.fail_next = {"/v1/load_lora_adapter": 503}
    state = eval_gate(version="3", settings=s_c, return_state=True)
    r4, v3_path = state.result(), reg.adapter_path("3")
    assert r4["promote"] and vllm.adapters == {"assistant": v3_path}
    assert deploy_runs(prefect_server, state.state_details.flow_run_id) == [2]  # failed once, retried
    assert reg.champion_history() == ["1", "3"]
    log = (data / "evals" / "irsflow-adapter" / "CHANGELOG.md").read_text()
    assert [line.split(": ")[1] for line in log.splitlines() if line.startswith("## Gate run")] == [
        "version 1 PROMOTED",
        "version 2 kept as challenger",
        "version 3 kept as challenger",
        "version 3 PROMOTED",
    ]
    assert "deploy failed" in log

    # rollback: champion back to 1, and vLLM reloaded with it
    (tmp_path / "s.json").write_text(s_c.model_dump_json())
    assert main(["rollback", "--settings", str(tmp_path / "s.json")]) == 0
    assert json.loads(capsys.readouterr().out)["to"] == "1"
    assert str(reg.version(CHAMPION).version) == "1" and vllm.adapters == {"assistant": v1_path}


def test_a_broken_adapter_never_reaches_the_registry(env, tiny_model, tmp_path):
    data, vllm = env
    from flows.eval_gate import eval_gate

    bad = job_with_random_adapter(tiny_model, 14)
    (bad.checkpoint("final") / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    reg = Registry(settings(vllm, "builtin:mc").tracking)
    before = [str(mv.version) for mv in reg.client.search_model_versions(f"name='{reg.s.model_name}'")]
    with pytest.raises(InputError, match="does not load"):
        eval_gate(job_id=bad.job_id, settings=settings(vllm, "builtin:mc"))
    after = [str(mv.version) for mv in reg.client.search_model_versions(f"name='{reg.s.model_name}'")]
    assert after == before


def test_a_first_promotion_that_fails_to_serve_leaves_no_champion(env, tiny_model, prefect_server):
    """The first-ever promotion, where there is no previous champion to roll back to: a failed load
    leaves no champion alias and nothing served, and raises the server's error (not "no previous
    champion", not bad input); a transient one is retried by the deploy task and then succeeds."""
    from tasks.eval import deploy_task

    with FakeVLLM(base_model=str(tiny_model)) as vllm:
        s = EvalGateSettings.model_validate(
            {
                "tracking": {"model_name": "first-promotion"},
                "vllm": {"base_url": vllm.base_url, "serving_name": "first"},
            }
        )
        version = register_job(s, job_with_random_adapter(tiny_model, 21))
        reg = Registry(s.tracking)
        before = reg.client.get_registered_model("first-promotion")
        result = {
            "version": version,
            "gate_run": 1,
            "date": "2026-12-02",
            "metrics": {"mc_accuracy": (0.5, 0.75)},
            "promote": True,
            "reasons": ["mc_correct: gain +0.2500"],
        }
        vllm.fail_next = {"/v1/load_lora_adapter": 404}
        with pytest.raises(ServingError, match="HTTP 404") as failed:
            promote_and_deploy(s, result, None)
        assert failed.value.status_code == 404 and failure_kind(failed.value) == "fatal"
        assert "no previous champion" not in str(failed.value) and "champion: none" in str(failed.value)
        after = reg.client.get_registered_model("first-promotion")
        assert after.aliases == before.aliases == {CHALLENGER: int(version)} and after.tags == before.tags
        assert reg.version(CHAMPION) is None and vllm.adapters == {}

        nobody = f"http://127.0.0.1:{free_port()}/v1"
        down = s.model_copy(update={"vllm": s.vllm.model_copy(update={"base_url": nobody})})
        with pytest.raises(ServingError, match="champion: none") as failed:  # nothing listens there
            promote_and_deploy(down, result, None)
        assert failure_kind(failed.value) == "transient" and reg.version(CHAMPION) is None

        vllm.fail_next = {"/v1/load_lora_adapter": 503}
        state = deploy_task(s, result, None, return_state=True)
        out = state.result()
        assert out["champion"] == version and str(reg.version(CHAMPION).version) == version
        assert vllm.adapters == {"first": out["path"]} and reg.champion_history() == [version]
        run = httpx.get(f"{prefect_server}/task_runs/{state.state_details.task_run_id}").json()
        assert run["run_count"] == 2  # the 503, then the retry
        assert "**promoted to champion**" in reg.version(version).description
