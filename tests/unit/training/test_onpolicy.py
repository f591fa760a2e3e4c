"""Per-example loss weights steer what SFT learns (measured with log-probabilities), and the mix
of on-policy and anchor rows matches the configured ratio."""

import pytest

from irsflow.errors import InputError
from irsflow.settings import LoraSettings
from irsflow.training.onpolicy import mix_rows
from irsflow.training.preference import pair_margins
from irsflow.training.sft import train_sft

PROMPTS = [[{"role": "user", "content": f"Reply to message number {i}."}] for i in range(8)]
A, B = "yes indeed, certainly so.", "nope, not at all."


def examples(weight_a: float, weight_b: float) -> list[dict]:
    rows = []
    for p in PROMPTS:
        rows.append({"prompt": p, "completion": [{"role": "assistant", "content": A}], "weight": weight_a})
        rows.append({"prompt": p, "completion": [{"role": "assistant", "content": B}], "weight": weight_b})
    return rows


def test_weights_steer_learning_toward_the_heavy_behaviour(tiny_model, tmp_path):
    pairs = [{"prompt": p, "chosen": A, "rejected": B} for p in PROMPTS]  # margin = log p(A) - log p(B)
    kw = dict(learning_rate=3e-3, batch_size=4, epochs=3, max_seq_length=512, lora=LoraSettings(r=8, alpha=16), seed=0)
    train_sft(str(tiny_model), None, examples(1.0, 1.0), tmp_path / "uniform", **kw)
    train_sft(str(tiny_model), None, examples(1.0, 0.05), tmp_path / "steered", **kw)
    uniform = sum(pair_margins(str(tiny_model), str(tmp_path / "uniform"), pairs)) / 8
    steered = sum(pair_margins(str(tiny_model), str(tmp_path / "steered"), pairs)) / 8
    print(f"margin log p(A) - log p(B): uniform {uniform:.2f}, steered {steered:.2f}")
    assert steered > uniform + 1.0, (uniform, steered)


def test_mix_ratio_matches_the_configuration():
    on = [{"prompt": [], "completion": [], "weight": 0.5, "i": i} for i in range(80)]
    anchors = [{"prompt": [], "completion": [], "j": j} for j in range(50)]
    rows = mix_rows(on, anchors, mix_ratio=0.8, seed=3)
    assert len(rows) == 100 and sum(r["source"] == "onpolicy" for r in rows) == 80
    assert all(r["weight"] == 1.0 for r in rows if r["source"] == "anchor")
    assert mix_rows(on, anchors, 0.8, seed=3) == rows and mix_rows(on, anchors, 0.8, seed=4) != rows
    with pytest.raises(InputError, match="mix_ratio"):
        mix_rows(on, anchors, 0)
    with pytest.raises(InputError, match="anchor rows needed"):
        mix_rows(on, anchors[:5], 0.5, total=40)
