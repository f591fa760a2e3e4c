"""A reward model trained with TRL's RewardTrainer on preference pairs ranks held-out pairs well
above chance, and serves as the `rm` reward-contract scorer."""

import random

import pytest

from irsflow.errors import ConfigError
from irsflow.rewards import RewardBatch, RewardEnv, build_rewards
from irsflow.rewards.rm import RewardModelScorer
from irsflow.rewards.settings import ScoringConfig
from irsflow.settings import LoraSettings
from irsflow.training.reward_model import train_reward_model

GOOD = [
    "Please rest, drink water and call your doctor if it gets worse.",
    "See a doctor soon; keep warm and rest.",
    "Drink fluids, rest well, and seek care if the fever stays high.",
    "Call your doctor and rest at home today.",
]


def pairs(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    junk = lambda: " ".join(
        "".join(rng.choice("qxzjkvw") for _ in range(rng.randint(3, 7)))  # noqa: E731
        for _ in range(rng.randint(4, 9))
    )
    return [
        {
            "prompt": [{"role": "user", "content": f"I feel unwell, day {rng.randint(1, 99)}. What now?"}],
            "chosen": rng.choice(GOOD),
            "rejected": junk(),
        }
        for _ in range(n)
    ]


def test_reward_model_ranks_held_out_pairs(tiny_model, tmp_path):
    stats = train_reward_model(
        str(tiny_model),
        pairs(0, 32),
        tmp_path / "rm",
        learning_rate=5e-3,
        batch_size=8,
        epochs=4,
        max_length=512,
        lora=LoraSettings(r=8, alpha=16),
        seed=0,
    )
    assert stats["steps"] == 16
    held = pairs(1, 24)
    rm = build_rewards(["rm"], RewardEnv(settings=ScoringConfig(reward_model=str(tmp_path / "rm"))))["rm"]
    q = [p["prompt"][0]["content"] for p in held]
    good = rm(RewardBatch(questions=q, answers=[p["chosen"] for p in held]))
    bad = rm(RewardBatch(questions=q, answers=[p["rejected"] for p in held]))
    accuracy = sum(g > b for g, b in zip(good, bad)) / len(held)
    print(f"held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.85, accuracy  # chance is 0.5
    assert all(0 <= v <= 1 for v in good + bad)


def test_rm_needs_a_trained_folder(tmp_path):
    with pytest.raises(ConfigError, match="scoring.reward_model"):
        build_rewards(["rm"], RewardEnv(settings=ScoringConfig()))
    with pytest.raises(ConfigError, match="not a trained reward model"):
        RewardModelScorer(tmp_path)
