"""What the training stages beyond IRS add to the request (``TrainRequest.stage_config``).

Every stage shares the request's model, question set, generation settings (``irs_config``:
sampling, ``n_candidates``, ``max_new_tokens``), LoRA/optimizer settings and rewards
(``irs_config.dw_config.initial_weights``); ``irs_config.n_iterations`` is the number of rounds.
This block holds only what differs between stages; each field says which stages read it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["IRS", "ONPOLICY", "DPO", "KTO", "GRPO", "PPO", "RM"]


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # ONPOLICY (seed 004)
    mix_ratio: float = Field(0.8, gt=0, le=1, description="ONPOLICY: share of on-policy rows in each round's batch.")
    anchors: str | None = Field(
        None, min_length=1, description="ONPOLICY: anchor dialogues, JSONL of {\"messages\": [...]} ending in an "
                                        "assistant turn; default: the question set's reference answers.")
    weight_floor: float = Field(0.0, ge=0, le=1, description="ONPOLICY: least loss weight of an on-policy row.")
    # DPO / KTO / RM
    pairs: list[str] = Field(default_factory=list, description="DPO/KTO/RM: pairs.jsonl files (the feedback ETL's "
                                                                "thumbs and corrections).")
    kto_up: str | None = Field(None, min_length=1, description="KTO: thumbs-up dialogues (ETL sft.messages.jsonl).")
    kto_down: str | None = Field(None, min_length=1, description="KTO: thumbs-down dialogues (ETL annotation_queue.jsonl).")
    from_candidates: bool = Field(True, description="DPO/KTO/RM: also pair each round's own best vs worst candidate.")
    min_margin: float = Field(0.05, ge=0, description="DPO/KTO/RM: least score gap of a pair built from candidates.")
    beta: float = Field(0.1, ge=0, description="DPO/KTO/GRPO: strength of the pull toward the reference model.")
    holdout: float = Field(0.2, ge=0, lt=1, description="RM: share of pairs held out for the accuracy check.")
    # PPO (seed 001)
    target_kl: float = Field(6.0, gt=0, description="PPO: KL (nats per answer) the adaptive KL coefficient steers to.")
    init_kl_coef: float = Field(0.2, ge=0, description="PPO: first round's KL penalty coefficient.")
    clip_range: float = Field(0.2, gt=0, lt=1, description="PPO: policy ratio clip.")
    vf_coef: float = Field(0.1, gt=0, description="PPO: value loss weight.")
    ppo_epochs: int = Field(2, ge=1, description="PPO: passes over each round's rollouts.")
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, gt=0, le=1, description="PPO: GAE lambda.")
    # every stage
    eval_each_round: bool | None = Field(
        None, description="Write eval_round_<n>.json and a CHANGELOG.md line after each round's training "
                          "(default: on for ONPOLICY, off otherwise).")
    eval_questions: int = Field(8, ge=1, description="Questions answered by each round's eval.")
