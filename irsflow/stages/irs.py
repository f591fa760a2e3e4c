"""IRS, the foundation (seed 000): each round generates N candidates per question, scores them with
the DW-GRPO rewards, and LoRA-SFTs the adapter on each question's best candidate.

    request: {"stage": "IRS", ...}          (the default stage; no stage_config of its own)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from irsflow.models import resolve_model
from irsflow.retry import halve_on_oom
from irsflow.stages.base import IterationInputs, Stage, StageSettings
from irsflow.store import JobStore, ProgressFn, hash_path, read_jsonl

if TYPE_CHECKING:
    from irsflow.config import TrainRequest


class IRSSettings(StageSettings):
    stage: Literal["IRS"] = Field("IRS", exclude=True)


class IRSStage(Stage):
    name, settings = "IRS", IRSSettings
    keys_stage_inputs = False  # IRS cache keys predate stages; they stay as they were
    task_name = "sft"  # the seed's name for IRS's training task

    def train(self, store: JobStore, req: TrainRequest, iteration: int, inputs: IterationInputs,
              progress: ProgressFn, teacher_api_key: str | None = None) -> dict:
        """LoRA SFT on each question's best candidate, continuing the previous round's adapter."""
        from irsflow.loop.phases import runtime_info
        from irsflow.training.sft import sft_examples, train_sft

        cfg = req.irs_config
        rows = read_jsonl(store.phase_dir(iteration) / "candidates.jsonl")
        best = [s["best"] for s in read_jsonl(store.phase_dir(iteration) / "scores.jsonl")]
        out_dir = store.checkpoint(iteration)
        examples = sft_examples(rows, best)

        def attempt(batch: int):
            # a halved batch with doubled accumulation keeps the effective batch and so the learning dynamics
            return train_sft(
                resolve_model(req.model_id), inputs.adapter, examples, out_dir,
                learning_rate=cfg.learning_rate, batch_size=batch, grad_accum=max(1, cfg.batch_size // batch),
                epochs=cfg.sft_epochs, max_seq_length=cfg.max_seq_length, lora=cfg.lora, seed=req.seed + iteration,
                load_in_4bit=cfg.load_in_4bit, progress=progress)

        stats = halve_on_oom(attempt, cfg.batch_size, "irs_config.batch_size",
                             f"sft (max_seq_length={cfg.max_seq_length})")
        store.metric(iteration, "TRAINING", epoch=cfg.sft_epochs, loss=round(stats["loss"], 6), steps=stats["steps"],
                     examples=stats["examples"], batch_size=stats["batch_size"], grad_accum=stats["grad_accum"],
                     seconds=round(stats["seconds"], 3), mem_after_release=stats["mem_after_release"])
        store.update_status(runtime=runtime_info(stats["mem_after_release"]))
        return {"adapter": str(out_dir), "sha256": hash_path(out_dir), **stats}


IRS = IRSStage()
