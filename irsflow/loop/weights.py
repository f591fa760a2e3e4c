"""DW-GRPO dynamic reward weights (seed 000 section 3.2), generalised to K rewards. Pure numpy.

For K rewards with per-iteration means ``history`` (shape ``(T, K)``, oldest first):

    slope_k  = least-squares slope of history[-window:, k] against 0..w-1
    target   = K * softmax(-slope / temperature)          # stagnating rewards gain weight
    weights <- momentum * weights + (1 - momentum) * target    # momentum 0.8 in the seed

Weights stay unchanged until two iterations of history exist. A reward with fewer than two
finite points in the window (it abstained) gets slope 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def reward_slopes(history: np.ndarray, window: int) -> np.ndarray:
    """(T, K) -> (K,) slopes over the last ``window`` rows; NaN points are skipped."""
    h = np.asarray(history, dtype=float)[-window:]
    out = np.zeros(h.shape[1])
    for k in range(h.shape[1]):
        y = h[:, k]
        x = np.arange(len(y), dtype=float)
        ok = np.isfinite(y)
        if ok.sum() >= 2:
            out[k] = np.polyfit(x[ok], y[ok], 1)[0]
    return out


def target_weights(slopes: np.ndarray, temperature: float) -> np.ndarray:
    """(K,) slopes -> (K,) weights summing to K: ``K * softmax(-slope / T)``."""
    z = -np.asarray(slopes, dtype=float) / temperature
    e = np.exp(z - z.max())  # shift for overflow safety; softmax is shift-invariant
    return len(e) * e / e.sum()


def update_weights(
    weights: np.ndarray, history: np.ndarray, window: int, temperature: float, momentum: float = 0.8
) -> np.ndarray:
    """One DW-GRPO step. ``weights`` (K,), ``history`` (T, K) -> new weights (K,)."""
    weights = np.asarray(weights, dtype=float)
    history = np.asarray(history, dtype=float).reshape(-1, len(weights))
    if len(history) < 2:
        return weights.copy()
    target = target_weights(reward_slopes(history, window), temperature)
    return momentum * weights + (1.0 - momentum) * target


@dataclass
class DynamicWeights:
    """Named wrapper that keeps the history and explains each update."""

    names: list[str]
    weights: np.ndarray
    window: int = 5
    temperature: float = 2.0
    momentum: float = 0.8
    history: list[list[float]] = field(default_factory=list)

    @classmethod
    def from_config(cls, dw) -> DynamicWeights:
        names = list(dw.initial_weights)
        return cls(
            names,
            np.array([dw.initial_weights[n] for n in names], dtype=float),
            dw.history_window,
            dw.temperature,
            dw.momentum,
        )

    @classmethod
    def resume(cls, weights: dict[str, float], history: list[dict], dw) -> DynamicWeights:
        """Rebuild from the current weights and past per-iteration means (dicts by name)."""
        names = list(weights)
        past = [[np.nan if h.get(n) is None else float(h[n]) for n in names] for h in history]
        return cls(
            names,
            np.array([weights[n] for n in names], dtype=float),
            dw.history_window,
            dw.temperature,
            dw.momentum,
            past,
        )

    def as_dict(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.names, self.weights)}

    def observe(self, means: dict[str, float | None]) -> dict:
        """Record one iteration's per-reward means, update the weights, and say why."""
        self.history.append([np.nan if means.get(n) is None else float(means[n]) for n in self.names])
        h = np.array(self.history)
        before = self.as_dict()
        self.weights = update_weights(self.weights, h, self.window, self.temperature, self.momentum)
        slopes = reward_slopes(h, self.window) if len(h) >= 2 else np.zeros(len(self.names))
        return {
            "weights_before": before,
            "weights_after": self.as_dict(),
            "slopes": {n: float(s) for n, s in zip(self.names, slopes)},
            "updated": len(h) >= 2,
        }
