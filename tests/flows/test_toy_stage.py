"""Adding a stage is its module, its test and one entry point, without a line of irsflow changed.

REFSFT lives in a package of its own, ``tests/support/toy_stage_pkg``: the module and a dist-info folder
whose ``entry_points.txt`` names it in the group ``irsflow.stages`` (what ``pip install`` of a package
declaring the entry point leaves on disk). It runs like a built-in stage:

- through the ``train/manual`` deployment, served by the stack's real worker (``irsflow up``, a
  process of its own that has never seen ``register()``); the flow-run process it starts gets the
  package's folder on ``PYTHONPATH`` and nothing else, so the entry point is the only way it can know the
  stage: without that folder the same run fails on the unknown stage. The file of its own it declares
  (``ref_rows.jsonl``) is hashed into each round's manifest.
- in this process, registered with ``register()`` (notebooks, tests): its settings validated, its own
  training task, and resume: a rerun reuses every round, except one whose declared file went missing.
"""

import os
import sys
import uuid

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.deployments import run_deployment

from irsflow.config import parse_request
from irsflow.errors import ConfigError
from irsflow.jobs.resume import read_manifest
from irsflow.loop import TRAINING
from irsflow.stages import register, stage_names, unregister
from irsflow.stages.data import reference_rows
from irsflow.store import JobStore, hash_path, read_jsonl
from tests.support.jobs import tiny_request
from tests.support.local import ROOT

TOY_DIR = ROOT / "tests" / "support" / "toy_stage_pkg"
DEPLOYMENT = "train/manual"


def refsft_request(tiny_model) -> dict:
    return tiny_request(
        tiny_model,
        stage="REFSFT",
        n_questions=4,
        stage_config={"repeat": 2},
        irs_config={"n_iterations": 2, "learning_rate": 5e-3},
    )


def training_task_runs(job_id: str) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"{job_id}-iter-")))
    return sorted(r.name for r in runs if r.name.startswith("train-"))


def test_a_worker_knows_a_stage_only_from_its_entry_point(stack, tiny_model, monkeypatch):
    monkeypatch.setenv("IRSFLOW_DATA_DIR", str(stack["data_dir"]))  # the worker's data dir
    assert "REFSFT" not in stage_names(), "this process must not know the stage (nor tell the worker)"
    req = refsft_request(tiny_model)
    pythonpath = os.pathsep.join(p for p in (str(TOY_DIR), os.environ.get("PYTHONPATH")) if p)

    # the control: the same run without the package's folder fails on the stage, before a job exists
    lost = f"toy-{uuid.uuid4().hex[:8]}"
    run = run_deployment(DEPLOYMENT, parameters={"request": req, "job_id": lost}, timeout=300)
    assert run.state.type.value == "FAILED", run.state
    assert "REFSFT" in (run.state.message or "") and "is not one of" in run.state.message, run.state.message
    assert not JobStore(lost).exists()

    job_id = f"toy-{uuid.uuid4().hex[:8]}"
    run = run_deployment(
        DEPLOYMENT,
        parameters={"request": req, "job_id": job_id},
        timeout=600,
        job_variables={"env": {"PYTHONPATH": pythonpath}},
    )
    assert run.state.type.value == "COMPLETED", run.state
    store = JobStore(job_id)
    assert store.read_status()["state"] == "completed"
    assert (store.checkpoint("final") / "adapter_config.json").is_file()
    assert not (store.phase_dir(1) / "candidates.jsonl").exists()  # it lists no GENERATING phase
    assert training_task_runs(job_id) == ["train-refsft-iter-1", "train-refsft-iter-2"]
    rows = [m for m in store.read_metrics() if m["phase"] == TRAINING and "loss" in m]
    for it in (1, 2):
        own = store.phase_dir(it) / "ref_rows.jsonl"
        n = len(read_jsonl(own))
        assert n > 0 and [r["examples"] for r in rows if r["iter"] == it] == [n]
        outputs = read_manifest(store, it)[TRAINING]["outputs"]
        assert outputs == {
            f"checkpoints/iter_{it}": hash_path(store.checkpoint(it)),
            f"phases/iter_{it}/ref_rows.jsonl": hash_path(own),
        }
    assert "REFSFT" not in stage_names()


@pytest.fixture()
def refsft(monkeypatch):
    """The toy stage registered in this process only, as a notebook would."""
    monkeypatch.syspath_prepend(str(TOY_DIR))
    from irsflow_toy_stage import REFSFT

    stage = register(REFSFT, replace=True)  # replace: this process may have read the entry point already
    yield stage
    unregister(stage.name)
    sys.modules.pop("irsflow_toy_stage", None)


def test_a_stage_registered_in_process_runs_through_the_flow_and_resumes(refsft, prefect_server, tiny_model, data_dir):
    from flows.train import train_job

    with pytest.raises(ConfigError, match=r"stage_config\.repeat: must be >= 1"):
        parse_request({"stage": "REFSFT", "stage_config": {"repeat": 0}})
    with pytest.raises(ConfigError, match=r"stage_config\.beta: not a setting of stage REFSFT"):
        parse_request({"stage": "REFSFT", "stage_config": {"beta": 0.5}})

    req = refsft_request(tiny_model)
    result = train_job(request=req)
    store = JobStore(result["job_id"])
    assert result["stage"] == "REFSFT" and store.read_status()["state"] == "completed"
    rows = [m for m in store.read_metrics() if m["phase"] == TRAINING and "loss" in m]
    n_refs = len(reference_rows(parse_request(req)))
    assert n_refs > 0 and [(r["iter"], r["examples"]) for r in rows] == [(1, 2 * n_refs), (2, 2 * n_refs)]
    assert training_task_runs(store.job_id) == ["train-refsft-iter-1", "train-refsft-iter-2"]

    # a rerun reuses both rounds' training; one whose own declared file is gone is trained again
    again = train_job(job_id=store.job_id)
    assert [it["cached"] for it in again["iterations"]] == [[TRAINING], [TRAINING]]
    (store.phase_dir(2) / "ref_rows.jsonl").unlink()
    again = train_job(job_id=store.job_id)
    assert [it["cached"] for it in again["iterations"]] == [[TRAINING], []]
    assert len(read_jsonl(store.phase_dir(2) / "ref_rows.jsonl")) == 2 * n_refs
