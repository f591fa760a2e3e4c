"""ONPOLICY: each round samples answers, scores them, and trains weighted LoRA SFT on a mix
of on-policy rows (loss weight = score) and anchor dialogues (weight 1); a round eval by default.

    request: {"stage": "ONPOLICY", "stage_config": {"mix_ratio": 0.8, "anchors": "anchors.jsonl"}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from irsflow.errors import InputError
from irsflow.loop import SCORING, TRAINING
from irsflow.models import resolve_model
from irsflow.paths import RequestPath
from irsflow.stages.base import IterationInputs, Stage, StageSettings, finish_round
from irsflow.stages.data import load_anchors, onpolicy_examples, onpolicy_rows
from irsflow.store import JobStore, ProgressFn, hash_path, write_jsonl

if TYPE_CHECKING:
    from irsflow.dataset import Question
    from irsflow.settings import JobRequest


class OnPolicySettings(StageSettings):
    stage: Literal["ONPOLICY"] = Field("ONPOLICY", exclude=True)
    mix_ratio: float = Field(0.8, gt=0, le=1, description="Share of on-policy rows in each round's batch.")
    anchors: RequestPath | None = Field(
        None,
        min_length=1,
        description='Anchor dialogues, JSONL of {"messages": [...]} ending in an '
        "assistant turn; default: the question set's reference answers.",
    )
    weight_floor: float = Field(0.0, ge=0, le=1, description="Least loss weight of an on-policy row.")

    def files(self) -> list[str]:
        return [self.anchors] if self.anchors else []


class OnPolicyStage(Stage):
    name, settings = "ONPOLICY", OnPolicySettings
    round_eval_default = True
    writes = {SCORING: ("onpolicy.jsonl",), TRAINING: ("train_rows.jsonl",)}

    def check_files(self, req: JobRequest, questions: list[Question]) -> None:
        anchors = load_anchors(req, questions)
        if req.stage_config.mix_ratio < 1 and not anchors:
            raise InputError("stage_config.anchors: no anchor rows")

    def after_scoring(self, store: JobStore, req: JobRequest, iteration: int) -> dict:
        """The round's samples as ChatML JSONL with metadata and a score/weight column."""
        rows = onpolicy_rows(store, req, iteration)
        path = store.phase_dir(iteration) / "onpolicy.jsonl"
        write_jsonl(path, rows)
        return {"onpolicy_rows": len(rows), "onpolicy_path": str(path), "onpolicy_sha256": hash_path(path)}

    def train(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn,
        teacher_api_key: str | None = None,
    ) -> dict:
        """Weighted LoRA SFT on ``mix_ratio`` on-policy rows (weight = score) + anchor rows (weight 1)."""
        from irsflow.training.onpolicy import mix_rows
        from irsflow.training.sft import train_sft

        cfg, sc = req.shared, req.stage_config
        on = onpolicy_examples(store.phase_dir(iteration) / "onpolicy.jsonl")
        rows = mix_rows(on, load_anchors(req) if sc.mix_ratio < 1 else [], sc.mix_ratio, seed=req.seed + iteration)
        write_jsonl(store.phase_dir(iteration) / "train_rows.jsonl", rows)
        examples = [{k: r[k] for k in ("prompt", "completion", "weight")} for r in rows]
        stats = train_sft(
            resolve_model(req.model_id),
            inputs.adapter,
            examples,
            store.checkpoint(iteration),
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            epochs=cfg.sft_epochs,
            max_seq_length=cfg.max_seq_length,
            lora=cfg.lora,
            seed=req.seed + iteration,
            load_in_4bit=cfg.load_in_4bit,
            progress=progress,
        )
        n_on = sum(r["source"] == "onpolicy" for r in rows)
        mix = {
            "onpolicy": n_on,
            "anchor": len(rows) - n_on,
            "onpolicy_share": round(n_on / len(rows), 4),
            "mean_weight": round(sum(r["weight"] for r in rows) / len(rows), 4),
        }
        return finish_round(
            store, iteration, {**stats, "mix": mix}, loss=stats["loss"], steps=stats["steps"], examples=len(rows), **mix
        )


ONPOLICY = OnPolicyStage()
