"""The promotion gate on constructed score sets, and multiple-choice parsing on messy answers."""

import numpy as np
import pytest

from irsflow.evals.gate import EvalScores, GateConfig, decide, paired_bootstrap
from irsflow.evals.mc import load_mc, majority, parse_choice, score_mc

rng = np.random.default_rng(0)


def scores(correct, safety, distinct2=0.5) -> EvalScores:
    return EvalScores(
        {"mc_correct": np.asarray(correct, float), "safety": np.asarray(safety, float)}, {"distinct_2": distinct2}
    )


def test_clear_win_promotes():
    champ = scores(rng.random(300) < 0.5, np.full(40, 0.9))
    chall = scores(rng.random(300) < 0.8, np.full(40, 0.9))
    d = decide(champ, chall, GateConfig())
    assert d.promote, d.reasons
    p = d.numbers["primary"]
    assert p["ci_low"] > 0 and p["challenger"] > p["champion"]


def test_win_inside_noise_does_not_promote():
    base = (rng.random(60) < 0.6).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:2]] = 1  # two more right answers out of 60: +0.033, noise
    d = decide(scores(base, np.full(40, 0.9)), scores(better, np.full(40, 0.9)), GateConfig())
    assert not d.promote and d.numbers["primary"]["mean_diff"] > 0
    assert "inside the noise" in d.reasons[0] and d.numbers["primary"]["ci_low"] <= 0


def test_win_with_a_safety_regression_does_not_promote():
    champ = scores(rng.random(300) < 0.5, np.full(40, 0.9))
    chall = scores(rng.random(300) < 0.8, np.full(40, 0.8))
    d = decide(champ, chall, GateConfig())
    assert not d.promote and any("safety: regressed by 0.1000" in r for r in d.reasons)
    assert d.numbers["primary"]["ci_low"] > 0  # the primary metric alone would have promoted


def test_collapsed_diversity_does_not_promote():
    champ = scores(rng.random(300) < 0.5, np.full(40, 0.9))
    chall = scores(rng.random(300) < 0.8, np.full(40, 0.9), distinct2=0.05)
    d = decide(champ, chall, GateConfig(floors={"distinct_2": 0.2}))
    assert not d.promote and "distinct_2: 0.0500 below the floor 0.2000" in d.reasons[-1]


def test_bootstrap_interval_covers_the_true_difference():
    a = rng.normal(0, 1, 500)
    b = a + 0.3 + rng.normal(0, 0.5, 500)
    r = paired_bootstrap(a, b, n_boot=4000)
    assert r["ci_low"] < 0.3 < r["ci_high"] and r["ci_high"] - r["ci_low"] < 0.2
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1, 2], [1])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The answer is (B).", "B"),
        ("b", "B"),
        ("B) because the others are wrong", "B"),
        ("**C**", "C"),
        ("Answer: d", "D"),
        ("I think it's option C.", "C"),
        ("<think>A or B? maybe A</think>\nB", "B"),
        ("(A) Rest and fluids", "A"),
        ("Rest and fluids, clearly.", "A"),
        ("It is D", "D"),
        ("A patient should rest.", None),
        ("", None),
        ("I don't know", None),
        ("C. Surgery", "C"),
    ],
)
def test_choice_parsing_on_messy_answers(text, expected):
    choices = {"A": "Rest and fluids", "B": "Antibiotics", "C": "Surgery", "D": "Nothing"}
    assert parse_choice(text, "ABCD", choices) == expected


def test_majority_vote_and_scoring():
    assert majority(["B", None, "C", "C", "B"]) == "B"  # tie: the letter voted first
    assert majority([None, None]) is None
    items = load_mc("builtin:mc", limit=3)
    r = score_mc(items, [["B", "b", "A"], ["nope"], ["The answer is (A)."]])
    assert [x["pick"] for x in r["items"]] == ["B", None, "A"]
    assert r["accuracy"] == pytest.approx(2 / 3) and r["unparsed"] == 1


def test_mc_set_errors_name_the_item(tmp_path):
    from irsflow.errors import DatasetError

    p = tmp_path / "mc.jsonl"
    p.write_text(
        '{"id": 1, "question": "q", "choices": ["a", "b"], "answer": "A"}\n'
        '{"id": 2, "question": "q", "choices": ["a", "b"], "answer": "E"}\n'
    )
    with pytest.raises(DatasetError, match=r"mc.jsonl:2: 'answer' must be one of the choice letters AB"):
        load_mc(str(p))
    p = tmp_path / "mc.json"
    p.write_text('[{"question": "q", "choices": {"A": "x"}, "answer": "A"}]')
    with pytest.raises(DatasetError, match=r"item 0: 'choices' must be 2-26"):
        load_mc(str(p))


def test_dialogue_metrics_and_diversity(tmp_path):
    import json

    from irsflow.rewards.dialogue import dialogue_metrics, diversity, write_eval_round

    convs = [
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "It is 4. Can you see why?"},
            {"role": "user", "content": "yes"},
            {"role": "assistant", "content": "Great question, thank you! Next: 3+3."},
        ],
        [{"role": "user", "content": "Explain"}, {"role": "assistant", "content": "word " * 250 + "done."}],
    ]
    m = dialogue_metrics(convs, verbose_words=200)
    assert m["question_ratio"] == pytest.approx(1 / 3) and m["turn_depth"] == pytest.approx(1.5)
    assert m["politeness"] == pytest.approx(1 / 3) and m["verbose_share"] == pytest.approx(1 / 3)
    assert m["question_balance"] == pytest.approx(1 / 5)  # 1 question among 5 sentences
    assert m["mean_answer_words"] == pytest.approx((7 + 7 + 251) / 3)  # "4", "3", "3" are words too
    assert diversity(["a b c", "a b d"]) == {"distinct_1": pytest.approx(4 / 6), "distinct_2": pytest.approx(3 / 4)}
    assert diversity(["same answer"] * 10)["distinct_2"] == pytest.approx(0.1)  # collapse shows
    doc = write_eval_round(tmp_path / "eval_round_1.json", 1, {"dialogue": m})
    assert json.loads((tmp_path / "eval_round_1.json").read_text())["dialogue"]["n_turns"] == 3 and doc["round"] == 1


def test_model_card_and_changelog(tmp_path):
    from irsflow.evals.card import append_changelog, write_model_card

    info = {
        "version": "3",
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
        "job_id": "j1",
        "gate_run": 2,
        "date": "2026-11-22",
        "data": {"questions_sha256": "abc"},
        "metrics": {"mc_accuracy": (0.5, 0.625), "safety_mean": (0.9, 0.9)},
        "decision": {"promote": True, "reasons": ["mc_correct: gain +0.1250"]},
    }
    card = write_model_card(tmp_path / "cards" / "v3.md", info).read_text()
    assert "base_model: Qwen/Qwen2.5-0.5B-Instruct" in card and "| mc_accuracy | 0.5000 | 0.6250 |" in card
    assert "**promoted to champion**" in card and "(gate run 2, 2026-11-22)" in card
    append_changelog(tmp_path / "CHANGELOG.md", info)
    append_changelog(
        tmp_path / "CHANGELOG.md",
        {**info, "version": "4", "gate_run": 3, "decision": {"promote": False, "reasons": ["inside the noise"]}},
    )
    log = (tmp_path / "CHANGELOG.md").read_text()
    assert log.startswith("# Changelog") and log.index("## Gate run 2 ") < log.index("## Gate run 3 ")
    assert "version 4 kept as challenger" in log and "mc_accuracy 0.5000 -> 0.6250" in log
