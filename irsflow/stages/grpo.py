"""GRPO: TRL's GRPOTrainer samples and scores inside training, with the request's rewards as reward
functions and the dynamic weights as ``reward_weights``; the round's per-reward means move the weights
the next round passes. Its rounds have no SCORING phase, so training records the round's scores
(``record_scores``: ``score_summary.json``, what the next round starts from) beside ``grpo_curve.json``.

    request: {"stage": "GRPO", "irs_config": {"batch_size": 4, "n_candidates": 4}, "stage_config": {"beta": 0.1}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from irsflow.loop import TRAINING
from irsflow.loop.phases import SCORE_SUMMARY, record_scores
from irsflow.loop.questions import train_questions
from irsflow.loop.weights import DynamicWeights
from irsflow.models import resolve_model
from irsflow.rewards import build_rewards, reward_env
from irsflow.stages.base import IterationInputs, Stage, StageSettings, finish_round, mean
from irsflow.store import JobStore, ProgressFn, atomic_write_json

if TYPE_CHECKING:
    from irsflow.settings import JobRequest


class GRPOSettings(StageSettings):
    stage: Literal["GRPO"] = Field("GRPO", exclude=True)
    beta: float = Field(0.1, ge=0, le=1000, description="Strength of the pull toward the reference model.")


class GRPOStage(Stage):
    name, settings = "GRPO", GRPOSettings
    samples = False  # GRPOTrainer generates inside training
    scores_in_training = True
    writes = {TRAINING: ("grpo_curve.json", SCORE_SUMMARY)}

    def check(self, req: JobRequest) -> None:
        cfg = req.shared
        if cfg.batch_size % cfg.n_candidates:
            raise ValueError(
                f"irs_config.batch_size: stage GRPO needs a multiple of n_candidates "
                f"({cfg.n_candidates}, the generations per prompt), got {cfg.batch_size}"
            )

    def train(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn,
        teacher_api_key: str | None = None,
    ) -> dict:
        from irsflow.training.grpo import train_grpo

        cfg = req.shared
        env = reward_env(
            req.scoring,
            teacher=req.teacher,
            teacher_api_key=teacher_api_key,
            usage_path=store.dir / "teacher_usage.csv",
        )
        rewards = build_rewards(list(inputs.weights), env)
        stats = train_grpo(
            resolve_model(req.model_id),
            inputs.adapter,
            train_questions(req),
            rewards,
            inputs.weights,
            store.checkpoint(iteration),
            system_prompt=req.system_prompt,
            top_k=req.top_k,
            num_generations=cfg.n_candidates,
            max_new_tokens=cfg.max_new_tokens,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            epochs=cfg.sft_epochs,
            beta=req.stage_config.beta,
            lora=cfg.lora,
            seed=req.seed + iteration,
            sampling=cfg.sampling,
            load_in_4bit=cfg.load_in_4bit,
            progress=progress,
        )
        curve = stats["curve"]
        atomic_write_json(store.phase_dir(iteration) / "grpo_curve.json", curve)
        means = {n: mean([c[n] for c in curve if c.get(n) is not None]) for n in inputs.weights}
        dw = DynamicWeights.resume(inputs.weights, inputs.history, cfg.dw_config)
        explain = dw.observe(means)
        avg = mean([c["reward"] for c in curve if c.get("reward") is not None])
        summary = {
            "avg_reward": avg,
            "best_avg_reward": mean([c["reward"] for c in curve[-1:] if c.get("reward") is not None]),
            "reward_breakdown": means,
            "weights": dict(inputs.weights),
            "next_weights": explain["weights_after"],
            "slopes": explain["slopes"],
            "weights_updated": explain["updated"],
            "scorer": env.similarity.kind,
        }
        record_scores(store, iteration, summary)
        return finish_round(
            store, iteration, {**stats, **summary}, loss=stats["loss"], steps=stats["steps"], avg_reward=avg
        )


GRPO = GRPOStage()
