"""REFSFT, a training stage from outside irsflow: what adding a stage takes (this module, and the
entry point in ``irsflow_toy_stage-0.1.dist-info/entry_points.txt`` beside it, which is how an
installed package declares it in its pyproject.toml):

    [project.entry-points."irsflow.stages"]
    REFSFT = "irsflow_toy_stage:REFSFT"

Each round SFTs the adapter on the question set's reference answers (``repeat`` copies of each); it
neither samples nor scores. ``ref_rows.jsonl``, the rows it trained on, is a file of its own: declared
in ``writes``, so the round's manifest hashes it. Put this folder on ``PYTHONPATH`` and every process,
a Prefect worker's flow run included, finds the stage (``tests/flows/test_toy_stage.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from irsflow.loop import TRAINING
from irsflow.models import resolve_model
from irsflow.stages import Stage, StageSettings
from irsflow.stages.base import finish_round
from irsflow.stages.data import reference_rows
from irsflow.store import write_jsonl

ROWS = "ref_rows.jsonl"


class RefSettings(StageSettings):
    stage: Literal["REFSFT"] = Field("REFSFT", exclude=True)
    repeat: int = Field(1, ge=1, le=100, description="Copies of each reference answer per round.")


class RefSFT(Stage):
    """SFT on the question set's reference answers: no sampling, no scoring."""

    name, settings = "REFSFT", RefSettings
    samples = False
    writes = {TRAINING: (ROWS,)}

    def train(self, store, req, iteration, inputs, progress, teacher_api_key=None):
        from irsflow.training.sft import train_sft

        cfg = req.shared
        rows = reference_rows(req) * req.stage_config.repeat
        write_jsonl(store.phase_dir(iteration) / ROWS, rows)
        stats = train_sft(
            resolve_model(req.model_id),
            inputs.adapter,
            rows,
            store.checkpoint(iteration),
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            epochs=1,
            max_seq_length=cfg.max_seq_length,
            lora=cfg.lora,
            seed=req.seed,
            progress=progress,
        )
        return finish_round(store, iteration, stats, loss=stats["loss"], examples=len(rows))


REFSFT = RefSFT()
