"""When a job stops early, and which round becomes final, from held-out summaries alone."""

from irsflow.jobs.finish import best_round, stop_decision
from irsflow.settings import EarlyStopConfig


def h(rnd, reward, d2=0.5, words=40.0):
    return {"round": rnd, "reward": reward, "distinct_2": d2, "mean_words": words}


def test_stop_decision():
    cfg = EarlyStopConfig(patience=2, min_gain=0.01, distinct2_floor=0.9, max_length_drift=0.5)
    assert stop_decision([h(0, 0.5), h(1, 0.6)], cfg) == (False, None)
    assert stop_decision([h(0, 0.5), h(1, 0.6), h(2, 0.605)], cfg) == (False, None)  # one round without a gain
    stop, why = stop_decision([h(0, 0.5), h(1, 0.6), h(2, 0.605), h(3, 0.59)], cfg)
    assert stop and why.startswith("no gain") and "for 2 round(s)" in why
    stop, why = stop_decision([h(0, 0.5), h(1, 0.7, d2=0.44)], cfg)  # 0.44 < 0.9 x 0.5
    assert stop and why.startswith("diversity")
    stop, why = stop_decision([h(0, 0.5), h(1, 0.7, words=15.0)], cfg)  # -62% words
    assert stop and why.startswith("length") and "-62%" in why
    assert stop_decision([h(0, 0.5), h(1, 0.1)], None) == (False, None)  # off without settings


def test_best_round():
    assert best_round([h(0, 0.9), h(1, 0.6), h(2, 0.7), h(3, 0.7)]) == 2  # round 0 is never "best"; ties: earliest
    assert best_round([h(0, 0.5)]) is None
