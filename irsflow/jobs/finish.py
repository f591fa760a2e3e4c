"""How a job ends: whether to stop after a round, and which round's adapter becomes final.

After each round the job loop (``irsflow.jobs.rounds``) asks ``stop_decision`` over the held-out
history (``irsflow.evals.heldout``; round 0 is the start model): with ``early_stop`` set, the job stops
when the held-out reward has not risen for ``patience`` rounds, or when diversity or answer length
drift past their bounds. ``conclude`` then copies the best round's adapter by held-out reward (the
last round's where the job holds nothing out) to ``checkpoints/final``.

    stop, why = stop_decision(heldout_history(store, 2), req.early_stop)
    final, round_ = conclude(store, req, last_round=2, stop_reason=why if stop else None)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from irsflow.evals.heldout import heldout_history
from irsflow.loop.phases import finalize
from irsflow.store import JobStore

if TYPE_CHECKING:
    from irsflow.config import TrainRequest
    from irsflow.settings import EarlyStopConfig

log = logging.getLogger("irsflow.jobs")


def stop_decision(history: list[dict], cfg: EarlyStopConfig | None) -> tuple[bool, str | None]:
    """Whether a job should stop after the last round of ``history`` (round 0 = the start model), and why."""
    if cfg is None or len(history) < 2:
        return False, None
    start, last = history[0], history[-1]
    if (
        cfg.distinct2_floor is not None
        and start["distinct_2"] > 0
        and last["distinct_2"] < cfg.distinct2_floor * start["distinct_2"]
    ):
        return True, (
            f"diversity: held-out distinct-2 {last['distinct_2']:.3f} fell below "
            f"{cfg.distinct2_floor:g} x the start model's {start['distinct_2']:.3f}"
        )
    if cfg.max_length_drift is not None and start["mean_words"] > 0:
        drift = last["mean_words"] / start["mean_words"] - 1
        if abs(drift) > cfg.max_length_drift:
            return True, (
                f"length: held-out answers moved {drift:+.0%} from the start model's "
                f"{start['mean_words']:.1f} words (bound {cfg.max_length_drift:.0%})"
            )
    best = history[0]["reward"]
    since = 0  # rounds since the last gain
    for h in history[1:]:
        if h["reward"] > best + cfg.min_gain:
            best, since = h["reward"], 0
        else:
            since += 1
    if since >= cfg.patience:
        return True, (
            f"no gain: held-out reward {last['reward']:.4f} has not risen more than {cfg.min_gain:g} "
            f"above the best {best:.4f} for {since} round(s)"
        )
    return False, None


def best_round(history: list[dict]) -> int | None:
    """The trained round with the highest held-out reward (the earliest on a tie); None without one."""
    trained = [h for h in history if h["round"] >= 1]
    return max(trained, key=lambda h: (h["reward"], -h["round"]))["round"] if trained else None


def conclude(store: JobStore, req: TrainRequest, last_round: int, stop_reason: str | None) -> tuple[str, int]:
    """Pick the job's final adapter and say why: the best round by held-out reward where the job held
    questions out, else its last round; copy it to ``checkpoints/final``, and record the choice (and an
    early stop's reason) in a METRICS row and the status. Returns ``(final path, round)``."""
    history = heldout_history(store, last_round)
    best = best_round(history) or last_round
    final = finalize(store, str(store.checkpoint(best)))
    note = {
        "final_round": best,
        "rounds_run": last_round,
        "final_by": "held-out reward" if len(history) > 1 else "last round",
        "stopped_early": stop_reason,
    }
    said = [m for m in store.read_metrics() if m.get("phase") == "METRICS" and "final_round" in m]
    if (len(history) > 1 or stop_reason) and not (said and all(said[-1].get(k) == v for k, v in note.items())):
        store.metric(last_round, "METRICS", **note)  # once, and again only when a rerun decides otherwise
    store.update_status(**note)  # stopped_early None clears an earlier run's reason
    if stop_reason:
        log.info(
            "stopped after round %d of %d: %s; final = round %d", last_round, req.shared.n_iterations, stop_reason, best
        )
    return final, best
