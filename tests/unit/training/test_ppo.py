"""PPO's parts on the tiny model (CPU): advantages by hand, the KL controller's direction, and an
update that moves probability toward the rewarded answers and away from the others."""

import pytest
import torch

from irsflow.settings import LoraSettings
from irsflow.stages.ppo import PPOSettings
from irsflow.training.ppo import VALUE_HEAD, gae, next_kl_coef, train_ppo
from irsflow.training.preference import pair_margins

PROMPTS = [[{"role": "user", "content": f"Reply to message number {i}."}] for i in range(6)]
GOOD, BAD = "yes indeed, certainly so.", "nope, not at all."


def test_gae_matches_a_hand_computation():
    adv, ret = gae(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.5, 0.5]), gamma=1.0, lam=0.5)
    # deltas: 0 + .5 - .5 = 0, 0 + .5 - .5 = 0, 1 - .5 = .5; A2 = .5, A1 = 0 + .5 * .5, A0 = .5 * .25
    assert adv.tolist() == pytest.approx([0.125, 0.25, 0.5])
    assert ret.tolist() == pytest.approx([0.625, 0.75, 1.0])


def test_kl_controller_moves_toward_the_target_by_at_most_ten_percent():
    assert next_kl_coef(0.2, kl=12.0, target=6.0) == pytest.approx(0.22)  # too far from the reference: pull harder
    assert next_kl_coef(0.2, kl=0.0, target=6.0) == pytest.approx(0.18)
    assert next_kl_coef(0.2, kl=6.0, target=6.0) == pytest.approx(0.2)


def test_ppo_moves_probability_toward_rewarded_answers(tiny_model, tmp_path):
    rollouts = [
        r
        for p in PROMPTS
        for r in ({"prompt": p, "answer": GOOD, "reward": 1.0}, {"prompt": p, "answer": BAD, "reward": 0.0})
    ]
    pairs = [{"prompt": p, "chosen": GOOD, "rejected": BAD} for p in PROMPTS]
    before = sum(pair_margins(str(tiny_model), None, pairs)) / len(pairs)
    stats = train_ppo(
        str(tiny_model),
        None,
        None,
        rollouts,
        tmp_path / "ppo",
        settings=PPOSettings(ppo_epochs=4),
        kl_coef=0.05,
        learning_rate=3e-3,
        batch_size=4,
        max_seq_length=512,
        lora=LoraSettings(r=8, alpha=16),
        seed=0,
    )
    after = sum(pair_margins(str(tiny_model), str(tmp_path / "ppo"), pairs)) / len(pairs)
    print(f"margin log p(good) - log p(bad): before {before:.2f}, after {after:.2f}; kl {stats['kl_after']:.3f}")
    assert after > before + 1.0, (before, after)
    assert stats["kl_mean"] == pytest.approx(0.0, abs=1e-4) and stats["kl_after"] != 0  # reference = start policy
    assert stats["steps"] == 4 * 3 and (tmp_path / "ppo" / VALUE_HEAD).is_file()
    # the rewarded answers' log-probs rose and the others' fell
    change = stats["logp_change"]
    assert sum(change[0::2]) > 0 > sum(change[1::2])
