"""On-policy rounds (seed 004): mix on-policy rows with an anchor set at a fixed ratio, each row
carrying its loss weight into the weighted SFT of ``irsflow.training.sft``.

    batch = mix_rows(onpolicy, anchors, mix_ratio=0.8, seed=0)   # 80% on-policy, 20% anchors
"""

from __future__ import annotations

import random

from irsflow.errors import InputError


def mix_rows(
    onpolicy: list[dict], anchors: list[dict], mix_ratio: float = 0.8, seed: int = 0, total: int | None = None
) -> list[dict]:
    """``total`` rows (default: as many as the on-policy rows allow at this ratio), of which
    ``round(total * mix_ratio)`` on-policy and the rest anchors, each tagged ``source``; anchors
    default to weight 1. Sampled without replacement, shuffled, seeded."""
    if not 0 < mix_ratio <= 1:
        raise InputError(f"mix_ratio: must be in (0, 1], got {mix_ratio}")
    if total is None:
        total = int(len(onpolicy) / mix_ratio) if mix_ratio < 1 else len(onpolicy)
        total = min(total, len(onpolicy) + len(anchors))
    n_on = round(total * mix_ratio)
    n_anchor = total - n_on
    if n_on > len(onpolicy) or n_anchor > len(anchors):
        raise InputError(
            f"mix: {n_on} on-policy and {n_anchor} anchor rows needed, have {len(onpolicy)} and {len(anchors)}"
        )
    rng = random.Random(seed)
    rows = [{**r, "source": "onpolicy"} for r in rng.sample(onpolicy, n_on)]
    rows += [{"weight": 1.0, **r, "source": "anchor"} for r in rng.sample(anchors, n_anchor)]
    rng.shuffle(rows)
    return rows
