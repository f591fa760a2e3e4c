"""What a round and a job return: typed results the flow, the local runner, the charts and the
benchmarks read, instead of each re-reading the phases' dicts.

    r = RoundResult(iteration=1, stage="IRS", phases={"GENERATING": {...}, "SCORING": {...}, "TRAINING": {...}})
    r.scores["avg_reward"], r.loss, r.gpu_seconds, r.heldout
    job.to_dict()        # what ``irsflow train`` prints and the ``train`` flow returns

A round's scores come from its SCORING phase, or from its TRAINING phase for a stage whose trainer
scores its own samples (``Stage.scores_in_training``: GRPO).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from irsflow.loop import ALL_PHASES, EVALUATING, GENERATING, SCORING, TRAINING
from irsflow.stages import get_stage

# each phase's result under these keys in a round's dict (what the ``train-round`` flow returns)
PHASE_KEYS = {GENERATING: "generate", SCORING: "score", TRAINING: "train", EVALUATING: "eval"}
GPU_PHASES = (GENERATING, TRAINING, EVALUATING)


@dataclass(frozen=True)
class RoundResult:
    """One round of a job: each phase's result by phase name, in the stage's order."""

    iteration: int
    stage: str
    phases: dict[str, dict]
    cached: tuple[str, ...] = ()  # phases whose result was reused from the cache

    @property
    def scores(self) -> dict:
        """The round's reward figures (``avg_reward``, ``reward_breakdown``, ``weights``, ``next_weights``);
        empty for a stage that scores nothing."""
        if SCORING in self.phases:
            return self.phases[SCORING]
        return self.phases[TRAINING] if get_stage(self.stage).scores_in_training else {}

    @property
    def loss(self) -> float:
        return self.phases[TRAINING]["loss"]

    @property
    def gpu_seconds(self) -> float:
        return sum(self.phases[p]["seconds"] for p in GPU_PHASES if p in self.phases)

    @property
    def heldout(self) -> dict | None:
        """The held-out summary of the round's adapter (``irsflow.evals.heldout``), if it answered them."""
        return self.phases.get(EVALUATING, {}).get("heldout")

    @property
    def heldout_start(self) -> dict | None:
        """The start model's held-out summary, where this round answered them too (round 1)."""
        return self.phases.get(EVALUATING, {}).get("heldout_start")

    def summary(self) -> dict:
        """The round as a job's result lists it."""
        s, out = self.scores, {}
        if EVALUATING in self.phases:
            out["eval"] = self.phases[EVALUATING].get("path")
        if self.heldout is not None:
            out["heldout"] = self.heldout
        return {
            "iter": self.iteration,
            "avg_reward": s.get("avg_reward"),
            "reward_breakdown": s.get("reward_breakdown"),
            "weights_used": s.get("weights"),
            "weights": s.get("next_weights"),
            "loss": self.loss,
            "cached": list(self.cached),
            **out,
        }

    def to_dict(self) -> dict:
        """The round as the ``train-round`` flow returns it (phase results under ``PHASE_KEYS``)."""
        return {
            "iteration": self.iteration,
            "stage": self.stage,
            "cached": list(self.cached),
            **{PHASE_KEYS[p]: r for p, r in self.phases.items()},
        }

    @classmethod
    def from_dict(cls, out: dict) -> RoundResult:
        phases = {p: out[k] for p, k in PHASE_KEYS.items() if k in out}
        return cls(
            iteration=out["iteration"],
            stage=out["stage"],
            phases={p: phases[p] for p in ALL_PHASES if p in phases},
            cached=tuple(out.get("cached", ())),
        )


@dataclass(frozen=True)
class JobResult:
    """A finished job: its rounds, and which round's adapter became ``checkpoints/final``."""

    job_id: str
    stage: str
    job_dir: Path
    final_adapter: str
    final_round: int
    stopped_early: str | None  # why the job stopped before its last round; None when it ran them all
    rounds: list[RoundResult] = field(default_factory=list)

    @property
    def gpu_seconds(self) -> float:
        return round(sum(r.gpu_seconds for r in self.rounds), 3)

    def to_dict(self) -> dict:
        return {
            "job_id": self.job_id,
            "stage": self.stage,
            "job_dir": str(self.job_dir),
            "final_adapter": self.final_adapter,
            "final_round": self.final_round,
            "stopped_early": self.stopped_early,
            "iterations": [r.summary() for r in self.rounds],
            "gpu_seconds": self.gpu_seconds,
        }
