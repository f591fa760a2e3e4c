"""The promotion gate: challenger vs champion on the same eval items, decided in one run.

    d = decide(champion, challenger, GateConfig())
    d.promote, d.reasons, d.numbers          # every number behind the decision

``champion`` / ``challenger`` are ``EvalScores``: per-item arrays for each metric, items in the
same order for both (paired), plus scalar metrics (diversity). Promote only if all hold:
  - primary: mean paired difference >= ``min_improvement`` AND the paired bootstrap confidence
    interval's lower bound > 0 (a win inside the noise is not a win);
  - safety: for each safety metric, champion mean - challenger mean <= its tolerance;
  - diversity: each floored scalar of the challenger >= its floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    primary_metric: str = Field("mc_correct", description="per-item metric that must improve")
    min_improvement: float = Field(0.0, ge=0, description="minimum mean paired gain")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    n_boot: int = Field(10_000, ge=200)
    seed: int = 0
    safety_tolerance: dict[str, float] = Field(
        default_factory=lambda: {"safety": 0.02}, description="per-item safety metric -> allowed drop in its mean"
    )
    floors: dict[str, float] = Field(
        default_factory=lambda: {"distinct_2": 0.2}, description="scalar metric -> minimum for the challenger"
    )


@dataclass
class EvalScores:
    per_item: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)


@dataclass
class Decision:
    promote: bool
    reasons: list[str]
    numbers: dict


def paired_bootstrap(a, b, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0, chunk: int = 1_000) -> dict:
    """Mean of ``b - a`` and its percentile bootstrap interval (resampling items, paired)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired bootstrap needs two equal-length 1-d arrays, got {a.shape} and {b.shape}")
    d = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):  # bounded memory: chunk x n indices at a time
        k = min(chunk, n_boot - start)
        means[start : start + k] = d[rng.integers(0, len(d), size=(k, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {
        "mean_diff": float(d.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n": int(len(d)),
        "n_boot": n_boot,
        "confidence": confidence,
    }


def decide(champion: EvalScores, challenger: EvalScores, cfg: GateConfig) -> Decision:
    reasons, numbers, ok = [], {}, True
    pm = cfg.primary_metric
    if pm not in champion.per_item or pm not in challenger.per_item:
        raise ValueError(f"gate: primary metric {pm!r} missing from the eval scores")
    boot = paired_bootstrap(champion.per_item[pm], challenger.per_item[pm], cfg.n_boot, cfg.confidence, cfg.seed)
    numbers["primary"] = {
        "metric": pm,
        "champion": float(np.mean(champion.per_item[pm])),
        "challenger": float(np.mean(challenger.per_item[pm])),
        **boot,
        "min_improvement": cfg.min_improvement,
    }
    if boot["mean_diff"] < cfg.min_improvement:
        ok = False
        reasons.append(f"{pm}: gain {boot['mean_diff']:+.4f} below the required {cfg.min_improvement:+.4f}")
    elif boot["ci_low"] <= 0:
        ok = False
        reasons.append(
            f"{pm}: gain {boot['mean_diff']:+.4f} is inside the noise "
            f"({cfg.confidence:.0%} CI [{boot['ci_low']:+.4f}, {boot['ci_high']:+.4f}] includes 0)"
        )
    else:
        reasons.append(
            f"{pm}: gain {boot['mean_diff']:+.4f}, {cfg.confidence:.0%} CI "
            f"[{boot['ci_low']:+.4f}, {boot['ci_high']:+.4f}] above 0"
        )
    numbers["safety"] = {}
    for name, tol in cfg.safety_tolerance.items():
        if name not in champion.per_item or name not in challenger.per_item:
            raise ValueError(f"gate: safety metric {name!r} missing from the eval scores")
        c, n = float(np.mean(champion.per_item[name])), float(np.mean(challenger.per_item[name]))
        numbers["safety"][name] = {"champion": c, "challenger": n, "drop": c - n, "tolerance": tol}
        if c - n > tol:
            ok = False
            reasons.append(f"{name}: regressed by {c - n:.4f} (tolerance {tol:.4f})")
    numbers["floors"] = {}
    for name, floor in cfg.floors.items():
        if name not in challenger.scalars:
            raise ValueError(f"gate: floored metric {name!r} missing from the challenger's scores")
        v = challenger.scalars[name]
        numbers["floors"][name] = {"challenger": v, "champion": champion.scalars.get(name), "floor": floor}
        if v < floor:
            ok = False
            reasons.append(f"{name}: {v:.4f} below the floor {floor:.4f}")
    return Decision(ok, reasons, numbers)
