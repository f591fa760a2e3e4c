"""DPO and KTO: each round pairs its best and worst candidates (and/or reads the feedback
ETL's pairs and thumbs files) and trains a preference objective against the round's start model.

    request: {"stage": "DPO", "stage_config": {"pairs": ["pairs.jsonl"], "beta": 0.1}}
    request: {"stage": "KTO", "stage_config": {"kto_up": "up.jsonl", "kto_down": "down.jsonl"}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from irsflow.loop import TRAINING
from irsflow.models import resolve_model
from irsflow.paths import RequestPath
from irsflow.stages.base import IterationInputs, Stage, StageSettings, finish_round
from irsflow.stages.data import kto_examples, preference_pairs
from irsflow.store import JobStore, ProgressFn, write_jsonl

if TYPE_CHECKING:
    from irsflow.dataset import Question
    from irsflow.settings import JobRequest


class PairSettings(StageSettings):
    """What every stage that learns from preference pairs shares (DPO, KTO, RM)."""

    pairs: list[RequestPath] = Field(
        default_factory=list,
        max_length=1000,
        description="pairs.jsonl files (the feedback ETL's thumbs and corrections).",
    )
    from_candidates: bool = Field(True, description="Also pair each round's own best vs worst candidate.")
    min_margin: float = Field(0.05, ge=0, le=1000, description="Least score gap of a pair built from candidates.")

    def files(self) -> list[str]:
        return list(self.pairs)


class DPOSettings(PairSettings):
    stage: Literal["DPO"] = Field("DPO", exclude=True)
    beta: float = Field(0.1, ge=0, le=1000, description="Strength of the pull toward the reference model.")


class KTOSettings(PairSettings):
    stage: Literal["KTO"] = Field("KTO", exclude=True)
    beta: float = Field(0.1, ge=0, le=1000, description="Strength of the pull toward the reference model.")
    kto_up: RequestPath | None = Field(None, min_length=1, description="Thumbs-up dialogues (ETL sft.messages.jsonl).")
    kto_down: RequestPath | None = Field(
        None, min_length=1, description="Thumbs-down dialogues (ETL annotation_queue.jsonl)."
    )

    def files(self) -> list[str]:
        return [*self.pairs, *(f for f in (self.kto_up, self.kto_down) if f)]


class PairStage(Stage):
    """A stage whose data are preference pairs: it samples only if it pairs its own candidates."""

    def samples_for(self, req: JobRequest) -> bool:
        return req.stage_config.from_candidates

    def check(self, req: JobRequest) -> None:
        sc = req.stage_config
        if not sc.from_candidates and not sc.pairs:
            raise ValueError(f"stage_config.pairs: stage {self.name} needs pairs files or from_candidates: true")

    def check_files(self, req: JobRequest, questions: list[Question]) -> None:
        from irsflow.stages.pairs import load_pairs

        for f in req.stage_config.pairs:
            load_pairs(f)


class PreferenceStage(PairStage):
    kind: str  # "dpo" | "kto"
    writes = {TRAINING: ("pairs.jsonl",)}  # the rows it trained on

    def __init__(self, name: str, settings: type[StageSettings]):
        self.name, self.settings, self.kind = name, settings, name.lower()

    def check(self, req: JobRequest) -> None:
        sc = req.stage_config
        if self.kind == "kto":
            if bool(sc.kto_up) != bool(sc.kto_down):
                raise ValueError("stage_config.kto_up: kto_up and kto_down go together")
            if not sc.from_candidates and not sc.pairs and not sc.kto_up:
                raise ValueError(
                    "stage_config.kto_up: stage KTO needs kto_up and kto_down files, pairs files "
                    "or from_candidates: true"
                )
            return
        super().check(req)

    def check_files(self, req: JobRequest, questions: list[Question]) -> None:
        super().check_files(req, questions)
        if self.kind == "kto" and req.stage_config.kto_up:
            from irsflow.stages.pairs import kto_rows

            kto_rows(req.stage_config.kto_up, req.stage_config.kto_down)

    def train(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn,
        teacher_api_key: str | None = None,
    ) -> dict:
        from irsflow.training.preference import train_preference

        cfg = req.shared
        rows = preference_pairs(store, req, iteration) if self.kind == "dpo" else kto_examples(store, req, iteration)
        write_jsonl(store.phase_dir(iteration) / "pairs.jsonl", rows)
        stats = train_preference(
            self.kind,
            resolve_model(req.model_id),
            inputs.adapter,
            rows,
            store.checkpoint(iteration),
            beta=req.stage_config.beta,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            epochs=cfg.sft_epochs,
            max_length=cfg.max_seq_length,
            lora=cfg.lora,
            seed=req.seed + iteration,
            load_in_4bit=cfg.load_in_4bit,
            progress=progress,
        )
        hist = stats.pop("history")
        margins = [h["rewards/margins"] for h in hist if "rewards/margins" in h]
        extra = {"margin_first": margins[0], "margin_last": margins[-1]} if margins else {}
        return finish_round(
            store, iteration, {**stats, **extra}, loss=stats["loss"], steps=stats["steps"], rows=len(rows), **extra
        )


DPO = PreferenceStage("DPO", DPOSettings)
KTO = PreferenceStage("KTO", KTOSettings)
