"""Which candidates a round trains on (IRS's selection settings), and how a question set is split into
training and held-out parts (early stopping needs the split; ``tests/unit/jobs/test_finish.py`` tests
when a job stops)."""

import pytest

from irsflow.config import parse_request
from irsflow.dataset import Question, split_heldout
from irsflow.errors import ConfigError
from irsflow.loop.scoring import select_candidates

TOTALS = [
    [0.9, 0.1, 0.1, 0.1],  # a clear winner: mean 0.3
    [0.5, 0.5, 0.5, 0.4],  # no signal: best 0.5 vs mean 0.475
    [0.2, 0.8, 0.7, 0.1],
]  # two good ones
BEST = [0, 0, 1]


def test_default_selection_is_each_questions_best():
    assert select_candidates(TOTALS, BEST, 1.0) == [[0], [0], [1]]


def test_skip_margin_drops_questions_without_signal():
    assert select_candidates(TOTALS, BEST, 1.0, skip_margin=0.1) == [[0], [], [1]]
    # totals are compared as scores in [0, 1]: the same margin over totals of weights summing to 2
    assert select_candidates([[2 * x for x in t] for t in TOTALS], BEST, 2.0, skip_margin=0.1) == [[0], [], [1]]


def test_top_k_above_a_threshold():
    assert select_candidates(TOTALS, BEST, 1.0, keep_top=2) == [[0, 1], [0, 1], [1, 2]]
    assert select_candidates(TOTALS, BEST, 1.0, keep_top=2, keep_threshold=0.6) == [[0], [], [1, 2]]


def test_selection_settings_are_irs_settings():
    req = parse_request({"stage_config": {"skip_margin": 0.05, "keep_top": 2}})
    assert req.stage_config.selection() == {"skip_margin": 0.05, "keep_top": 2}
    assert parse_request({}).stage_config.selection() == {}
    with pytest.raises(ConfigError, match="stage_config.keep_top: not a setting of stage DPO"):
        parse_request({"stage": "DPO", "stage_config": {"keep_top": 2}})


def test_early_stop_needs_the_split():
    with pytest.raises(ConfigError, match="early_stop: needs the held-out split"):
        parse_request({"early_stop": {}, "heldout": {"share": 0}})


def q(i, topic=None):
    return Question(id=f"q{i}", question=f"question {i}?", meta={"topic": topic} if topic else {})


def test_split_holds_out_whole_topics_and_is_seeded():
    qs = [q(i, f"t{i % 7}") for i in range(35)]
    train, held = split_heldout(qs, 0.2, seed=1)
    assert len(train) + len(held) == 35 and 5 <= len(held) <= 10
    assert not {x.meta["topic"] for x in train} & {x.meta["topic"] for x in held}  # no shared topic
    assert split_heldout(qs, 0.2, seed=1) == (train, held) and split_heldout(qs, 0.2, seed=2) != (train, held)
    plain_train, plain_held = split_heldout([q(i) for i in range(20)], 0.2, seed=1)
    assert len(plain_held) == 4 and len(plain_train) == 16
    assert split_heldout(qs, 0.0, seed=1) == (qs, [])


def test_a_big_topic_is_not_held_out_whole_when_it_overshoots():
    qs = [q(i, "big") for i in range(18)] + [q(18, "small"), q(19, "small")]
    for seed in range(8):  # whatever the shuffle, the 18-question topic would hold out 90%
        train, held = split_heldout(qs, 0.2, seed=seed)
        assert [x.id for x in held] == ["q18", "q19"] and len(train) == 18
