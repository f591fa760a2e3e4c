"""The request's ``scoring`` block: how candidates are scored (which scorer backs the similarity
rewards, the rule file, the ``rlaif`` fusion formula). Reward names are checked against the reward
registry (``irsflow.rewards.known_rewards``), which never imports a trainer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irsflow.errors import ConfigError
from irsflow.paths import ModelRef, RequestPath


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class FusionConfig(_Strict):
    """The ``rlaif`` reward: a linear formula over other rewards (seed 001), and when the teacher
    and the rules disagree enough for an item to go to ``teacher_conflicts.jsonl``."""

    weights: dict[str, Annotated[float, Field(ge=-1000, le=1000)]] = Field(
        default_factory=lambda: {"chain": 0.35, "emergency": 0.25, "risk": -0.15, "teacher": 0.25},
        description="Reward name -> weight; penalties (risk) take negative weights.",
    )
    conflict_threshold: float = Field(
        0.4, gt=0, le=1, description="|teacher_score - rules_score| above this is a conflict."
    )

    @field_validator("weights")
    @classmethod
    def _formula(cls, value: dict[str, float]) -> dict[str, float]:
        from irsflow.rewards import is_penalty, known_rewards

        unknown = sorted(set(value) - set(known_rewards()) | ({"rlaif"} & set(value)))
        if unknown:
            raise ValueError(f"unknown or recursive reward {unknown[0]!r} (known: {', '.join(known_rewards())})")
        for k, w in value.items():
            if is_penalty(k) and w > 0:
                raise ValueError(f"{k!r} is a penalty: its weight must be <= 0")
        if sum(w for w in value.values() if w > 0) <= 0:
            raise ValueError("needs at least one positive weight")
        return value


class ScoringConfig(_Strict):
    """How the DW-GRPO rewards are computed (seed 000 section 3.1)."""

    backend: Literal["auto", "embedding", "heuristic"] = Field(
        "auto", description="auto: embeddings, falling back to the heuristic scorer if they cannot load."
    )
    embedder: ModelRef = Field("builtin:minilm", description="Sentence-transformers folder or builtin:minilm.")
    reranker_path: ModelRef | None = Field(None, description="Cross-encoder folder for `rel`; cosine if unset.")
    faith: Literal["embedding", "bertscore"] = "embedding"
    device: str = "cpu"
    rules: RequestPath = Field(
        "builtin:default",
        min_length=1,
        description="Rule-reward file (red flags, risk patterns, chain): see irsflow/data/reward_rules.json.",
    )
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    reward_model: RequestPath | None = Field(
        None, min_length=1, description="Trained reward model folder for the `rm` reward."
    )
    length_limit: int = Field(
        80, ge=1, le=1_000_000, description="Words an answer may take before `length_limit` starts to fall."
    )

    @field_validator("rules")
    @classmethod
    def _rules_load(cls, value: str) -> str:
        from irsflow.rewards.rules import load_rules

        try:
            load_rules(value)
        except ConfigError as err:  # re-raised by pydantic with the field path
            raise ValueError(str(err).removeprefix("scoring.rules: ")) from None
        return value
