"""IRS, the foundation: each round generates N candidates per question, scores them with
the DW-GRPO rewards, and LoRA-SFTs the adapter on each question's best candidate.

    request: {"stage": "IRS", ...}          (the default stage; no stage_config of its own)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from irsflow.errors import InputError
from irsflow.loop.phases import score_summary_path
from irsflow.loop.scoring import select_candidates
from irsflow.models import resolve_model
from irsflow.retry import halve_on_oom
from irsflow.stages.base import IterationInputs, Stage, StageSettings
from irsflow.store import JobStore, ProgressFn, hash_path, read_jsonl

if TYPE_CHECKING:
    from irsflow.settings import JobRequest


class IRSSettings(StageSettings):
    """Which candidates a round trains on (default: each question's best)."""

    stage: Literal["IRS"] = Field("IRS", exclude=True)
    skip_margin: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="Skip a question whose best candidate's score is not above its candidates' "
        "mean by more than this (scores are weighted totals / sum of weights, in "
        "[0, 1]).",
    )
    keep_top: int = Field(1, ge=1, le=256, description="Train on up to this many candidates per question, best first.")
    keep_threshold: float | None = Field(
        None, ge=0, le=1, description="Train only on candidates whose score reaches this (in [0, 1])."
    )

    def selection(self) -> dict:
        """The selection settings that differ from the default (a round that uses one reports ``questions_used``)."""
        return self.model_dump(include={"skip_margin", "keep_top", "keep_threshold"}, exclude_defaults=True)


class IRSStage(Stage):
    name, settings = "IRS", IRSSettings
    task_name = "sft"  # IRS's training task kept the name it had before there were stages

    def train(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn,
        teacher_api_key: str | None = None,
    ) -> dict:
        """LoRA SFT on each question's best candidate, continuing the previous round's adapter."""
        from irsflow.loop.phases import runtime_info
        from irsflow.training.sft import sft_examples, train_sft

        cfg = req.shared
        sc = req.stage_config
        rows = read_jsonl(store.phase_dir(iteration) / "candidates.jsonl")
        scores = read_jsonl(store.phase_dir(iteration) / "scores.jsonl")
        weights = json.loads(score_summary_path(store, iteration).read_text(encoding="utf-8"))["weights"]
        chosen = select_candidates(
            [s["totals"] for s in scores],
            [s["best"] for s in scores],
            sum(weights.values()),
            sc.skip_margin,
            sc.keep_top,
            sc.keep_threshold,
        )
        out_dir = store.checkpoint(iteration)
        examples = sft_examples(rows, chosen)
        if not examples:
            raise InputError(
                f"stage_config.skip_margin: round {iteration} kept no candidate to train on "
                f"(skip_margin {sc.skip_margin}, keep_threshold {sc.keep_threshold}); lower them"
            )
        selection = {"questions_used": sum(bool(c) for c in chosen)} if sc.selection() else {}

        def attempt(batch: int):
            # a halved batch with doubled accumulation keeps the effective batch and so the learning dynamics
            return train_sft(
                resolve_model(req.model_id),
                inputs.adapter,
                examples,
                out_dir,
                learning_rate=cfg.learning_rate,
                batch_size=batch,
                grad_accum=max(1, cfg.batch_size // batch),
                epochs=cfg.sft_epochs,
                max_seq_length=cfg.max_seq_length,
                lora=cfg.lora,
                seed=req.seed + iteration,
                load_in_4bit=cfg.load_in_4bit,
                progress=progress,
            )

        stats = halve_on_oom(
            attempt, cfg.batch_size, "irs_config.batch_size", f"sft (max_seq_length={cfg.max_seq_length})"
        )
        store.metric(
            iteration,
            "TRAINING",
            epoch=cfg.sft_epochs,
            loss=round(stats["loss"], 6),
            steps=stats["steps"],
            examples=stats["examples"],
            batch_size=stats["batch_size"],
            grad_accum=stats["grad_accum"],
            seconds=round(stats["seconds"], 3),
            mem_after_release=stats["mem_after_release"],
            **selection,
        )
        store.update_status(runtime=runtime_info(stats["mem_after_release"]))
        return {"adapter": str(out_dir), "sha256": hash_path(out_dir), **stats}


IRS = IRSStage()
