"""Per-round summary rows and the reward/weight trend chart (reward means and weights per round).

    rows = [iteration_row(r) for r in job.rounds]      # one dict per round (a RoundResult each)
    png = trend_chart_png(rows)                         # bytes of a PNG
    md = trends_markdown(job_id, rows, png)             # markdown with the PNG inlined

The chart shows which reward is stagnating and how the dynamic weights answered it, round by round,
beside the held-out reward where the job holds questions out.
"""

from __future__ import annotations

import base64
import io

from irsflow.jobs.results import RoundResult
from irsflow.loop import ALL_PHASES, EVALUATING, GENERATING, SCORING, TRAINING


def _r(v):
    return None if v is None else round(v, 4)


def iteration_row(r: RoundResult) -> dict:
    """Flatten one round's phase results into a table row."""
    s, g, t = r.scores, r.phases.get(GENERATING), r.phases[TRAINING]
    row = {"iter": r.iteration, "avg_reward": _r(s.get("avg_reward")), "best_avg_reward": _r(s.get("best_avg_reward"))}
    row.update({f"r_{k}": _r(v) for k, v in (s.get("reward_breakdown") or {}).items()})
    row.update({f"w_{k}": round(v, 4) for k, v in (s.get("weights") or {}).items()})
    row["loss"] = round(r.loss, 4)
    if g is not None:
        row.update({"generate_s": round(g["seconds"], 1), "score_s": round(r.phases[SCORING]["seconds"], 1)})
    row["train_s"] = round(t["seconds"], 1)
    if EVALUATING in r.phases:
        row["eval_s"] = round(r.phases[EVALUATING]["seconds"], 1)
        h = r.heldout
        if h:  # the held-out answers of the round's adapter: what a user watches to see rounds still help
            row.update(
                heldout_reward=_r(h["reward"]),
                heldout_distinct_2=_r(h["distinct_2"]),
                heldout_words=round(h["mean_words"], 1),
            )
        if r.heldout_start:
            row["heldout_start_reward"] = _r(r.heldout_start["reward"])
    row["cached"] = ",".join(p.lower() for p in ALL_PHASES if p in r.cached) or "-"
    return row


def _series(rows: list[dict], prefix: str) -> dict[str, list]:
    names = sorted({k[len(prefix) :] for r in rows for k in r if k.startswith(prefix)})
    return {n: [r.get(prefix + n) for r in rows] for n in names}


def trend_chart_png(rows: list[dict], title: str = "") -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    its = [r["iter"] for r in rows]
    fig, (ax_r, ax_w) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for name, ys in _series(rows, "r_").items():
        ax_r.plot(its, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    ax_r.plot(its, [r["avg_reward"] for r in rows], marker="s", color="black", linewidth=2, label="weighted avg")
    if any("heldout_reward" in r for r in rows):
        ax_r.plot(
            its,
            [r.get("heldout_reward", float("nan")) for r in rows],
            marker="D",
            color="tab:red",
            linestyle="--",
            linewidth=2,
            label="held-out (greedy)",
        )
        start = next((r["heldout_start_reward"] for r in rows if r.get("heldout_start_reward") is not None), None)
        if start is not None:
            ax_r.axhline(start, color="tab:red", linestyle=":", linewidth=1, label="held-out, start model")
    ax_r.set(title="reward means", xlabel="iteration")
    for name, ys in _series(rows, "w_").items():
        ax_w.plot(its, ys, marker="o", label=name)
    ax_w.set(title="weights used (DW-GRPO)", xlabel="iteration")
    for ax in (ax_r, ax_w):
        ax.set_xticks(its)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a stage that scores nothing has no weights to plot
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def trends_markdown(job_id: str, rows: list[dict], png: bytes) -> str:
    """Markdown for the UI: the chart inlined as a data URI, then the numbers behind it."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    cols = list(rows[0]) if rows else []
    lines = [f"### job `{job_id}`: reward and weight trends", "", f"![reward and weight trends]({uri})", ""]
    if cols:
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("-" if r.get(c) is None else str(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
