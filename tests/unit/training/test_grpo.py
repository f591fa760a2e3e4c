"""GRPO through TRL on the tiny model (CPU) with reward-contract scorers as its reward functions."""

import pytest

from irsflow.dataset import load_questions
from irsflow.rewards import RewardEnv, build_rewards
from irsflow.rewards.settings import ScoringConfig
from irsflow.settings import LoraSettings
from irsflow.training.grpo import reward_funcs, train_grpo


def test_scorers_become_trl_reward_functions():
    rewards = build_rewards(["conc", "emergency"], RewardEnv(settings=ScoringConfig()))
    conc, emergency = reward_funcs(rewards)
    assert (conc.__name__, emergency.__name__) == ("conc", "emergency")
    prompts = [[{"role": "system", "content": "s"}, {"role": "user", "content": "I have chest pain"}]] * 2
    completions = [[{"role": "assistant", "content": "Call 911 now."}], [{"role": "assistant", "content": "Rest."}]]
    assert emergency(prompts, completions) == [1.0, 0.0]
    assert conc(prompts, completions, context=["x" * 100, ""]) == [pytest.approx(1 - 13 / 100), None]  # abstains


def test_grpo_trains_with_the_irs_rewards(tiny_model, tmp_path):
    qs = load_questions("builtin:demo", 4)
    rewards = build_rewards(["conc"], RewardEnv(settings=ScoringConfig(backend="heuristic")))
    stats = train_grpo(
        str(tiny_model),
        None,
        qs,
        rewards,
        {"conc": 1.0},
        tmp_path / "grpo",
        system_prompt="Answer.",
        top_k=1,
        num_generations=4,
        max_new_tokens=12,
        learning_rate=1e-3,
        batch_size=4,
        epochs=1,
        beta=0.0,
        lora=LoraSettings(r=8, alpha=16),
        seed=0,
    )
    assert stats["steps"] >= 1 and (tmp_path / "grpo" / "adapter_model.safetensors").is_file()
    assert stats["curve"] and all(c["conc"] is not None and 0 <= c["conc"] <= 1 for c in stats["curve"])
