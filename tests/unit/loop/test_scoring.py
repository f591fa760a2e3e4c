"""Combining rewards and selecting the best candidate per question."""

import numpy as np
import pytest

from irsflow.loop.scoring import score_candidates, weighted_totals
from irsflow.rewards import RewardBatch


class Table:
    """A reward that looks its value up by answer text (None = abstain)."""

    def __init__(self, name, values):
        self.name, self.values = name, values

    def __call__(self, batch: RewardBatch):
        return [self.values[a] for a in batch.answers]


def test_weighted_totals_skip_abstentions():
    m = np.array([[0.5, np.nan], [0.2, 1.0]])
    np.testing.assert_allclose(weighted_totals(m, np.array([2.0, 0.5])), [1.0, 0.9])


def test_best_is_the_highest_weighted_total_and_weights_matter():
    rows = [
        {"question": "q1", "context": "c", "candidates": ["a", "b", "c"]},
        {"question": "q2", "context": "", "candidates": ["d", "e"]},
    ]
    rel = Table("rel", {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.2, "e": 0.3})
    conc = Table("conc", {"a": 0.0, "b": 1.0, "c": 0.5, "d": None, "e": None})
    r = score_candidates(rows, {"rel": rel, "conc": conc}, {"rel": 1.0, "conc": 0.5})
    assert r.best == [0, 1]  # a: 0.9 vs b: 0.6 vs c: 0.75; e beats d on rel alone
    r2 = score_candidates(rows, {"rel": rel, "conc": conc}, {"rel": 1.0, "conc": 2.0})
    assert r2.best[0] == 1  # b: 0.1 + 2.0 = 2.1 wins once conc weighs more
    assert r.means["rel"] == pytest.approx(np.mean([0.9, 0.1, 0.5, 0.2, 0.3]))
    assert r.means["conc"] == pytest.approx(0.5)  # abstentions excluded
    assert r.breakdown(1, 0) == {"rel": 0.2, "conc": None}
    assert r.avg_reward == pytest.approx(np.mean([0.9, 0.6, 0.75, 0.2, 0.3]))
    assert r.best_avg_reward == pytest.approx(np.mean([0.9, 0.3]))


def test_chunking_does_not_change_results():
    rows = [{"question": f"q{i}", "context": "ctx", "candidates": [f"a{i}", f"b{i}"]} for i in range(7)]
    vals = {f"{p}{i}": (i * 7 + (p == "b") * 3) % 5 / 5 for i in range(7) for p in "ab"}
    rw = {"rel": Table("rel", vals)}
    assert (
        score_candidates(rows, rw, {"rel": 1}, chunk_questions=2).best
        == score_candidates(rows, rw, {"rel": 1}, chunk_questions=100).best
    )


def test_a_reward_returning_the_wrong_count_is_an_error():
    with pytest.raises(ValueError, match="returned 1 scores for 2 items"):
        score_candidates([{"question": "q", "candidates": ["a", "b"]}], {"rel": lambda batch: [0.1]}, {"rel": 1.0})
