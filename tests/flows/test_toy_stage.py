"""Adding a stage is one module and one entry: a stage defined here, in the test, and registered at
run time runs through the real Prefect flow like a built-in one (its own settings validated, its own
training task, the job's layout, resume), without a line of irsflow changed."""
from typing import Literal

import pytest
from pydantic import Field

from irsflow.config import parse_request
from irsflow.errors import ConfigError
from irsflow.jobs.job import create_job, job_status
from irsflow.loop import TRAINING
from irsflow.models import resolve_model
from irsflow.stages import Stage, StageSettings, register, unregister
from irsflow.stages.base import finish_round
from irsflow.stages.data import reference_rows
from tests.support.jobs import tiny_request


class RefSettings(StageSettings):
    stage: Literal["REFSFT"] = Field("REFSFT", exclude=True)
    repeat: int = Field(1, ge=1, description="Copies of each reference answer per round.")


class RefSFT(Stage):
    """SFT on the question set's reference answers: no sampling, no scoring."""

    name, settings = "REFSFT", RefSettings
    samples = False

    def train(self, store, req, iteration, inputs, progress, teacher_api_key=None):
        from irsflow.training.sft import train_sft

        cfg = req.irs_config
        rows = reference_rows(req) * req.stage_config.repeat
        stats = train_sft(resolve_model(req.model_id), inputs.adapter, rows, store.checkpoint(iteration),
                          learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, epochs=1,
                          max_seq_length=cfg.max_seq_length, lora=cfg.lora, seed=req.seed, progress=progress)
        return finish_round(store, iteration, stats, loss=stats["loss"], examples=len(rows))


@pytest.fixture()
def refsft():
    stage = register(RefSFT())
    yield stage
    unregister(stage.name)


def test_a_stage_registered_from_a_test_runs_through_the_flow(refsft, prefect_server, tiny_model, data_dir):
    from flows.irs import irs_train
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with pytest.raises(ConfigError, match=r"stage_config\.repeat: must be >= 1"):
        parse_request({"stage": "REFSFT", "stage_config": {"repeat": 0}})
    with pytest.raises(ConfigError, match=r"stage_config\.beta: not a setting of stage REFSFT"):
        parse_request({"stage": "REFSFT", "stage_config": {"beta": 0.5}})

    req = tiny_request(tiny_model, stage="REFSFT", n_questions=4, stage_config={"repeat": 2},
                       irs_config={"n_iterations": 2, "learning_rate": 5e-3})
    store = create_job(req)
    result = irs_train(request=req, job_id=store.job_id)
    assert result["stage"] == "REFSFT" and job_status(store.job_id)["state"] == "completed"
    assert (store.checkpoint("final") / "adapter_config.json").is_file()
    assert not (store.phase_dir(1) / "candidates.jsonl").exists()  # it listed no GENERATING phase
    rows = [m for m in store.read_metrics() if m["phase"] == TRAINING and "loss" in m]
    n_refs = len(reference_rows(parse_request(req)))
    assert n_refs > 0 and [(r["iter"], r["examples"]) for r in rows] == [(1, 2 * n_refs), (2, 2 * n_refs)]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"{store.job_id}-iter-")))
    assert sorted(r.name for r in runs) == ["train-refsft-iter-1", "train-refsft-iter-2"]

    # a rerun of the finished job reuses both rounds' training from the cache
    again = irs_train(job_id=store.job_id)
    assert [it["cached"] for it in again["iterations"]] == [[TRAINING], [TRAINING]]
