"""GRPO repeats: the same seed gives the same adapter, reward curve and loss, whatever the process ran
before (bench_learning runs every job in one process). Before the fix, round 1's fresh LoRA drew
its A matrices from the global RNG before GRPOTrainer seeded it, so a second identical run differed."""

import random

import numpy as np
import torch
from safetensors.torch import load_file

from irsflow.dataset import load_questions
from irsflow.rewards import RewardEnv, build_rewards
from irsflow.rewards.settings import ScoringConfig
from irsflow.settings import LoraSettings
from irsflow.training.grpo import train_grpo


def _round(tiny_model, out, seed: int) -> tuple[dict, dict]:
    rewards = build_rewards(["conc"], RewardEnv(settings=ScoringConfig(backend="heuristic")))
    stats = train_grpo(
        str(tiny_model),
        None,
        load_questions("builtin:demo", 4),
        rewards,
        {"conc": 1.0},
        out,
        system_prompt="Answer.",
        top_k=1,
        num_generations=4,
        max_new_tokens=12,
        learning_rate=1e-3,
        batch_size=4,
        epochs=1,
        beta=0.0,
        lora=LoraSettings(r=8, alpha=16),
        seed=seed,
    )
    return stats, load_file(str(out / "adapter_model.safetensors"))


def _touch_global_rngs() -> None:
    """What another job in the same process leaves behind: every global RNG moved on."""
    torch.rand(7), random.random(), np.random.rand()


def test_two_grpo_rounds_with_one_seed_are_identical(tiny_model, tmp_path):
    first, w1 = _round(tiny_model, tmp_path / "a", seed=5)
    _touch_global_rngs()
    second, w2 = _round(tiny_model, tmp_path / "b", seed=5)
    assert first["curve"] == second["curve"] and first["loss"] == second["loss"]  # exact, not approx
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert any(c["reward"] != first["curve"][0]["reward"] for c in first["curve"])  # the curve is not flat

    _, w3 = _round(tiny_model, tmp_path / "c", seed=6)  # the seed is what decides: another one differs
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)
