"""Dynamic weights against numbers computed by hand (seed 000 section 3.2)."""

import math

import numpy as np
import pytest

from irsflow.loop.weights import DynamicWeights, reward_slopes, target_weights, update_weights


def test_slopes_are_least_squares_over_the_window():
    h = np.array([[0.0, 5.0], [9.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    # window 3 keeps rows 2..4: first column 1,2,3 -> slope 1; second 2,3,4 -> slope 1
    np.testing.assert_allclose(reward_slopes(h, 3), [1.0, 1.0])
    # window 5, column 0: x=0..4, y=0,9,1,2,3 -> slope = sum((x-2)(y-3))/10 = (-2*-3 + -1*6 + 0 + 1*-1 + 2*0)/10
    assert reward_slopes(h, 5)[0] == pytest.approx((6 - 6 + 0 - 1 + 0) / 10)


def test_target_is_k_times_softmax_of_negative_slope():
    t = target_weights(np.array([0.2, 0.0, -0.2]), temperature=2.0)
    e = [math.exp(-0.1), 1.0, math.exp(0.1)]
    np.testing.assert_allclose(t, [3 * x / sum(e) for x in e])
    assert t.sum() == pytest.approx(3.0)
    assert t[2] > t[1] > t[0]  # the stagnating (falling) reward gains weight


def test_update_by_hand():
    w = np.array([1.0, 1.0, 0.5])
    hist = np.array([[0.5, 0.5, 0.5], [0.7, 0.5, 0.3]])  # slopes 0.2, 0, -0.2
    e = [math.exp(-0.1), 1.0, math.exp(0.1)]
    target = [3 * x / sum(e) for x in e]
    expected = [0.8 * wi + 0.2 * ti for wi, ti in zip(w, target)]
    np.testing.assert_allclose(update_weights(w, hist, window=5, temperature=2.0), expected)
    # Spelled out for the first reward: target 3*e^-0.1/(e^-0.1+1+e^0.1) = 0.901829
    assert expected[0] == pytest.approx(0.8 + 0.2 * 0.901829, abs=1e-6)


def test_unchanged_until_two_iterations_of_history():
    w = np.array([1.0, 2.0])
    np.testing.assert_array_equal(update_weights(w, np.zeros((0, 2)), 5, 2.0), w)
    np.testing.assert_array_equal(update_weights(w, np.array([[0.3, 0.9]]), 5, 2.0), w)


def test_generalises_to_k_rewards_and_skips_abstentions():
    w = np.ones(5)
    hist = np.array([[0.1, 0.2, np.nan, 0.4, 0.5], [0.2, 0.2, np.nan, 0.4, 0.1]])
    new = update_weights(w, hist, 5, 1.0)
    assert new.shape == (5,) and np.isfinite(new).all()
    slopes = reward_slopes(hist, 5)
    assert slopes[2] == 0.0 and slopes[0] == pytest.approx(0.1) and slopes[4] == pytest.approx(-0.4)


def test_named_wrapper_explains_each_update():
    class DW:  # the config shape
        history_window, temperature, momentum = 5, 2.0, 0.8
        initial_weights = {"rel": 1.0, "faith": 1.0, "conc": 0.5}

    dw = DynamicWeights.from_config(DW)
    first = dw.observe({"rel": 0.5, "faith": 0.5, "conc": 0.5})
    assert not first["updated"] and first["weights_after"] == DW.initial_weights
    second = dw.observe({"rel": 0.7, "faith": 0.5, "conc": 0.3})
    assert second["updated"] and second["slopes"]["conc"] == pytest.approx(-0.2)
    assert second["weights_after"]["conc"] > 0.5 and second["weights_after"]["rel"] < 1.0
    resumed = DynamicWeights.resume(first["weights_after"], [{"rel": 0.5, "faith": 0.5, "conc": 0.5}], DW)
    assert resumed.observe({"rel": 0.7, "faith": 0.5, "conc": 0.3})["weights_after"] == second["weights_after"]
