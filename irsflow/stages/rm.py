"""RM: trains a reward model (a scalar head on the base model) once, on preference pairs
(this round's best vs worst candidates and/or the feedback ETL's pairs), and checks it on a seeded
held-out share. The result serves as the ``rm`` reward (``scoring.reward_model``).

    request: {"stage": "RM", "irs_config": {"n_iterations": 1}, "stage_config": {"pairs": ["pairs.jsonl"]}}
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from irsflow.dataset import last_user_turn
from irsflow.loop import TRAINING
from irsflow.models import resolve_model
from irsflow.stages.base import IterationInputs, finish_round
from irsflow.stages.data import preference_pairs
from irsflow.stages.preference import PairSettings, PairStage
from irsflow.store import JobStore, ProgressFn, atomic_write_json, write_jsonl

if TYPE_CHECKING:
    from irsflow.settings import JobRequest


class RMSettings(PairSettings):
    stage: Literal["RM"] = Field("RM", exclude=True)
    holdout: float = Field(0.2, ge=0, lt=1, description="Share of pairs held out for the accuracy check.")


class RMStage(PairStage):
    name, settings = "RM", RMSettings
    trains_policy = False  # its adapter is a reward head, not a chat model
    writes = {TRAINING: ("pairs.jsonl", "rm_eval.json")}

    def check(self, req: JobRequest) -> None:
        super().check(req)
        if req.shared.n_iterations != 1:
            raise ValueError("irs_config.n_iterations: stage RM trains once; must be 1")
        if req.init_adapter:
            raise ValueError("init_adapter: stage RM trains a fresh scalar head on the base model; leave it unset")

    def train(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn,
        teacher_api_key: str | None = None,
    ) -> dict:
        return train_rm(store, req, iteration, inputs, progress)


def train_rm(store: JobStore, req: JobRequest, iteration: int, inputs: IterationInputs, progress: ProgressFn) -> dict:
    """RewardTrainer on the pairs minus a seeded held-out share; accuracy on the held-out pairs
    (chosen scored above rejected) goes to ``rm_eval.json`` and the metrics row."""
    from irsflow.rewards import RewardBatch
    from irsflow.rewards.rm import RewardModelScorer
    from irsflow.training.reward_model import train_reward_model

    cfg, sc = req.shared, req.stage_config
    # the `rm` scorer sees (question, answer) in a user/assistant turn, so it is trained on exactly that
    pairs = [
        {**p, "prompt": [{"role": "user", "content": _question(p)}]} for p in preference_pairs(store, req, iteration)
    ]
    rng = random.Random(req.seed)
    shuffled = rng.sample(pairs, len(pairs))
    n_held = int(round(len(pairs) * sc.holdout)) if len(pairs) > 1 else 0
    held, train = shuffled[:n_held], shuffled[n_held:]
    write_jsonl(
        store.phase_dir(iteration) / "pairs.jsonl", [{**p, "heldout": i < n_held} for i, p in enumerate(shuffled)]
    )
    t0 = time.perf_counter()
    stats = train_reward_model(
        resolve_model(req.model_id),
        train,
        store.checkpoint(iteration),
        learning_rate=cfg.learning_rate,
        batch_size=cfg.batch_size,
        epochs=cfg.sft_epochs,
        max_length=cfg.max_seq_length,
        lora=cfg.lora,
        seed=req.seed + iteration,
        progress=progress,
    )
    accuracy = None
    if held:
        scorer = RewardModelScorer(store.checkpoint(iteration))
        try:
            q = [_question(p) for p in held]
            chosen = scorer(RewardBatch(questions=q, answers=[p["chosen"] for p in held]))
            rejected = scorer(RewardBatch(questions=q, answers=[p["rejected"] for p in held]))
        finally:
            scorer.close()
        accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(held)
    atomic_write_json(
        store.phase_dir(iteration) / "rm_eval.json",
        {"heldout_pairs": len(held), "train_pairs": len(train), "accuracy": accuracy},
    )
    stats = {**stats, "heldout_accuracy": accuracy, "seconds": time.perf_counter() - t0}
    return finish_round(
        store,
        iteration,
        stats,
        loss=stats["loss"],
        steps=stats["steps"],
        pairs=len(train),
        heldout_pairs=len(held),
        heldout_accuracy=accuracy,
    )


def _question(pair: dict) -> str:
    return pair.get("question") or last_user_turn(pair["prompt"])


RM = RMStage()
