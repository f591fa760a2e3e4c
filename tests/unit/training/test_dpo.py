"""DPO/KTO on the tiny model (CPU): the chosen/rejected margin grows on the training pairs; pairs
from IRS candidates respect the margin; bad pair files name the line."""

import json

import pytest

from irsflow.errors import InputError
from irsflow.settings import LoraSettings
from irsflow.stages.pairs import kto_rows, load_pairs
from irsflow.training.preference import pair_margins, train_preference

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Say something about item {i}."}],
        "chosen": f"Item {i} is fine and safe.",
        "rejected": f"zzz qqq {i} xx",
    }
    for i in range(8)
]


def test_dpo_grows_the_margin_on_its_pairs(tiny_model, tmp_path):
    before = pair_margins(str(tiny_model), None, PAIRS)
    stats = train_preference(
        "dpo",
        str(tiny_model),
        None,
        PAIRS,
        tmp_path / "dpo",
        beta=0.1,
        learning_rate=5e-3,
        batch_size=4,
        epochs=4,
        max_length=256,
        lora=LoraSettings(r=8, alpha=16),
        seed=0,
    )
    after = pair_margins(str(tiny_model), str(tmp_path / "dpo"), PAIRS)
    gain = sum(after) / len(after) - sum(before) / len(before)
    assert stats["steps"] == 8 and gain > 1.0, (before, after)
    assert sum(a > b for a, b in zip(after, before)) >= 7  # nearly every pair moved the right way
    assert (tmp_path / "dpo" / "adapter_model.safetensors").is_file()


def test_kto_trains_on_unpaired_thumbs(tiny_model, tmp_path):
    up, down = tmp_path / "up.jsonl", tmp_path / "down.jsonl"
    up.write_text(
        "".join(
            json.dumps({"messages": p["prompt"] + [{"role": "assistant", "content": p["chosen"]}]}) + "\n"
            for p in PAIRS
        )
    )
    down.write_text(
        "".join(
            json.dumps({"messages": p["prompt"] + [{"role": "assistant", "content": p["rejected"]}]}) + "\n"
            for p in PAIRS
        )
    )
    rows = kto_rows(up, down)
    assert [r["label"] for r in rows] == [True] * 8 + [False] * 8
    before = pair_margins(str(tiny_model), None, PAIRS)
    train_preference(
        "kto",
        str(tiny_model),
        None,
        rows,
        tmp_path / "kto",
        beta=0.1,
        learning_rate=5e-3,
        batch_size=4,
        epochs=3,
        max_length=256,
        lora=LoraSettings(r=8, alpha=16),
        seed=0,
    )
    after = pair_margins(str(tiny_model), str(tmp_path / "kto"), PAIRS)
    assert sum(after) / 8 > sum(before) / 8


def test_pair_files_are_validated(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text(
        json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b"})
        + "\n"
        + json.dumps({"prompt": "hi", "chosen": "a", "rejected": "a"})
        + "\n"
    )
    with pytest.raises(InputError, match=r"pairs.jsonl:2: chosen and rejected are the same text"):
        load_pairs(p)
    p.write_text(json.dumps({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(InputError, match=r"pairs.jsonl:1: 'prompt' must be"):
        load_pairs(p)


def test_irs_pairs_take_best_and_worst_above_the_margin(tiny_model, data_dir):
    from irsflow.jobs.job import create_job
    from irsflow.stages.pairs import irs_pairs
    from irsflow.store import write_jsonl
    from tests.support.jobs import tiny_request

    store = create_job(tiny_request(tiny_model))
    prompt = [{"role": "user", "content": "q"}]
    store.phase_dir(1).mkdir(parents=True, exist_ok=True)
    write_jsonl(store.phase_dir(1) / "candidates.jsonl", [{"id": "a", "prompt": prompt}, {"id": "b", "prompt": prompt}])
    cands = lambda totals: [{"text": f"answer {t}", "total": t} for t in totals]  # noqa: E731
    write_jsonl(
        store.samples_path,
        [
            {"iter": 1, "id": "a", "candidates": cands([0.2, 0.9, 0.5])},
            {"iter": 1, "id": "b", "candidates": cands([0.50, 0.52])},
        ],
    )
    (pair,) = irs_pairs(store, min_margin=0.05)
    assert (pair["id"], pair["chosen"], pair["rejected"], pair["margin"]) == ("1:a", "answer 0.9", "answer 0.2", 0.7)
    assert pair["prompt"] == prompt and len(irs_pairs(store, min_margin=0.01)) == 2


def test_the_cpu_logprob_fallback_matches_log_softmax():
    import torch

    from irsflow.training.trl_compat import PlainLogProb

    h, w, t = torch.randn(5, 8), torch.randn(11, 8), torch.randint(0, 11, (5,))
    lp, ent, _, _, top1 = PlainLogProb.apply(h, w, None, t, 1.0, 4096)
    ref = torch.log_softmax(h @ w.T, -1)
    torch.testing.assert_close(lp, ref[torch.arange(5), t])
    torch.testing.assert_close(ent, -(ref.exp() * ref).sum(-1))
    assert top1.tolist() == (ref.argmax(-1) == t).tolist()
