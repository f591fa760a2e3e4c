"""Score every candidate with K rewards, combine with the current weights, pick the best.

    result = score_candidates(rows, rewards, weights)
    result.best[i]          # index of the chosen candidate of question i
    result.means            # per-reward mean over all candidates (feeds the dynamic weights)

The weighted total of a candidate is ``sum_k w_k * r_k`` over the rewards that did not abstain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irsflow.rewards import Reward, RewardBatch
from irsflow.store import ProgressFn, no_progress


@dataclass
class ScoreResult:
    names: list[str]
    matrix: list[np.ndarray]  # per question: (N, K) rewards, NaN where a reward abstained
    totals: list[np.ndarray]  # per question: (N,) weighted totals
    best: list[int]

    @property
    def means(self) -> dict[str, float | None]:
        allr = np.concatenate(self.matrix) if self.matrix else np.zeros((0, len(self.names)))
        out = {}
        for k, n in enumerate(self.names):
            col = allr[:, k]
            out[n] = float(np.nanmean(col)) if np.isfinite(col).any() else None
        return out

    @property
    def avg_reward(self) -> float:
        return float(np.mean(np.concatenate(self.totals))) if self.totals else 0.0

    @property
    def best_avg_reward(self) -> float:
        return float(np.mean([t[b] for t, b in zip(self.totals, self.best)])) if self.totals else 0.0

    def breakdown(self, q: int, c: int) -> dict[str, float | None]:
        return {n: (None if np.isnan(v) else round(float(v), 6)) for n, v in zip(self.names, self.matrix[q][c])}


def weighted_totals(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, K) rewards with NaN abstentions, (K,) weights -> (N,) totals."""
    return np.nansum(np.asarray(matrix, dtype=float) * np.asarray(weights, dtype=float), axis=1)


def score_candidates(
    rows: list[dict],
    rewards: dict[str, Reward],
    weights: dict[str, float],
    progress: ProgressFn = no_progress,
    chunk_questions: int = 16,
) -> ScoreResult:
    """``rows``: one dict per question with ``question``, ``context`` (joined text),
    ``reference``, ``candidates`` (list of answer strings) and optionally ``id``."""
    names = list(rewards)
    w = np.array([weights[n] for n in names], dtype=float)
    matrices, totals, best = [], [], []
    for start in range(0, len(rows), chunk_questions):
        chunk = rows[start : start + chunk_questions]
        flat = [(r, a) for r in chunk for a in r["candidates"]]
        batch = RewardBatch(
            questions=[r["question"] for r, _ in flat],
            answers=[a for _, a in flat],
            contexts=[r.get("context") or "" for r, _ in flat],
            references=[r.get("reference") for r, _ in flat],
            # "<row id>/<candidate index>": what the teacher's judgements are recorded under
            meta=[
                {"id": f"{r['id']}/{j}"} if r.get("id") is not None else {}
                for r in chunk
                for j in range(len(r["candidates"]))
            ],
        )
        cols = []
        for n in names:
            vals = rewards[n](batch)
            if len(vals) != len(batch):
                raise ValueError(f"reward {n!r} returned {len(vals)} scores for {len(batch)} items")
            cols.append([np.nan if v is None else float(v) for v in vals])
        m = np.array(cols, dtype=float).T.reshape(len(flat), len(names))
        pos = 0
        for r in chunk:
            n_c = len(r["candidates"])
            mq = m[pos : pos + n_c]
            tq = weighted_totals(mq, w)
            matrices.append(mq)
            totals.append(tq)
            best.append(int(np.argmax(tq)))
            pos += n_c
        progress(100.0 * min(len(rows), start + chunk_questions) / len(rows))
    return ScoreResult(names, matrices, totals, best)


def select_candidates(
    totals: list[list[float]],
    best: list[int],
    weight_sum: float,
    skip_margin: float | None = None,
    keep_top: int = 1,
    keep_threshold: float | None = None,
) -> list[list[int]]:
    """Which candidates of each question to train on. Default: the best one. ``skip_margin``: none of a
    question whose best total is not above its candidates' mean by that much (a prompt that carries no
    signal); ``keep_top``: up to that many, best first; ``keep_threshold``: only those whose total over
    the sum of the weights (a score in [0, 1]) reaches it. Totals are the round's weighted totals."""
    out = []
    for t, b in zip(totals, best):
        norm = [x / (weight_sum or 1.0) for x in t]
        if skip_margin is not None and norm[b] - sum(norm) / len(norm) <= skip_margin:
            out.append([])
            continue
        order = [b] + sorted((j for j in range(len(t)) if j != b), key=lambda j: -t[j])
        keep = order[:keep_top]
        if keep_threshold is not None:
            keep = [j for j in keep if norm[j] >= keep_threshold]
        out.append(keep)
    return out
