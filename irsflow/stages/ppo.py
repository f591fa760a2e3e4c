"""PPO: each round samples rollouts, scores them with the request's rewards, and trains a
LoRA policy with a value head against the model the job started from, the KL coefficient adapting
toward ``target_kl`` from round to round (``kl.json``, the job's ``rewards.csv``/``kl_metrics.json``).

    request: {"stage": "PPO", "stage_config": {"target_kl": 6.0, "init_kl_coef": 0.2}}
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from irsflow.loop import TRAINING
from irsflow.models import resolve_model
from irsflow.stages.base import IterationInputs, Stage, StageSettings, finish_round
from irsflow.stages.data import scored_answers
from irsflow.store import JobStore, ProgressFn, atomic_write_json, atomic_write_text, hash_or_missing

if TYPE_CHECKING:
    from irsflow.settings import JobRequest


class PPOSettings(StageSettings):
    stage: Literal["PPO"] = Field("PPO", exclude=True)
    target_kl: float = Field(
        6.0, gt=0, le=1e6, description="KL (nats per answer) the adaptive KL coefficient steers to."
    )
    init_kl_coef: float = Field(0.2, ge=0, le=1000, description="First round's KL penalty coefficient.")
    clip_range: float = Field(0.2, gt=0, lt=1, description="Policy ratio clip.")
    vf_coef: float = Field(0.1, gt=0, le=1000, description="Value loss weight.")
    ppo_epochs: int = Field(2, ge=1, le=100, description="Passes over each round's rollouts.")
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, gt=0, le=1, description="GAE lambda.")


class PPOStage(Stage):
    name, settings = "PPO", PPOSettings
    # the job-level rewards.csv and kl_metrics.json are rebuilt every round: no round's manifest holds them
    writes = {TRAINING: ("rollouts.csv", "kl.json")}

    def key_parts(self, store: JobStore, req: JobRequest, phase: str, inputs: IterationInputs, iteration: int) -> dict:
        parts = super().key_parts(store, req, phase, inputs, iteration)
        if phase == TRAINING:  # the round starts from the KL coefficient the round before ended with
            parts.update(previous_kl=hash_or_missing(store.phase_dir(iteration - 1) / "kl.json"))
        return parts

    def train(
        self,
        store: JobStore,
        req: JobRequest,
        iteration: int,
        inputs: IterationInputs,
        progress: ProgressFn,
        teacher_api_key: str | None = None,
    ) -> dict:
        return train_ppo_round(store, req, iteration, inputs, progress)


def train_ppo_round(
    store: JobStore, req: JobRequest, iteration: int, inputs: IterationInputs, progress: ProgressFn
) -> dict:
    """PPO on the round's scored rollouts (reward = weighted total / sum of weights), reference =
    the model the job started from; writes the round's rollouts.csv/kl.json and rebuilds the job's
    ``rewards.csv`` and ``kl_metrics.json`` over all rounds so far."""
    from irsflow.training.ppo import train_ppo

    cfg, sc = req.shared, req.stage_config
    rollouts, keys = [], []
    for s, row, j, c, score in scored_answers(store, iteration):
        rollouts.append(
            {"prompt": row["prompt"], "answer": c["text"], "reward": score, "stopped": c["finish_reason"] == "stop"}
        )
        keys.append((s["id"], j))
    prev = store.phase_dir(inputs.previous) / "kl.json" if inputs.previous else None
    kl_coef = json.loads(prev.read_text())["next_kl_coef"] if prev and prev.exists() else sc.init_kl_coef
    stats = train_ppo(
        resolve_model(req.model_id),
        inputs.adapter,
        store.read_config().get("init_adapter_path"),
        rollouts,
        store.checkpoint(iteration),
        settings=sc,
        kl_coef=kl_coef,
        learning_rate=cfg.learning_rate,
        batch_size=cfg.batch_size,
        max_seq_length=cfg.max_seq_length,
        lora=cfg.lora,
        seed=req.seed + iteration,
        load_in_4bit=cfg.load_in_4bit,
        progress=progress,
    )
    per_kl, change = stats.pop("kl"), stats.pop("logp_change")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["round", "id", "candidate", "reward", "kl", "kl_penalty", "logp_change"])
    for (qid, j), r, k, d in zip(keys, rollouts, per_kl, change):
        w.writerow([iteration, qid, j, f"{r['reward']:.6f}", f"{k:.6f}", f"{-kl_coef * k:.6f}", f"{d:.6f}"])
    atomic_write_text(store.phase_dir(iteration) / "rollouts.csv", buf.getvalue())
    kl_doc = {
        "round": iteration,
        **{
            k: stats[k]
            for k in (
                "kl_coef",
                "next_kl_coef",
                "target_kl",
                "kl_mean",
                "kl_after",
                "policy_loss",
                "value_loss",
                "clipfrac",
                "approx_kl",
                "reward_mean",
                "steps",
            )
        },
    }
    atomic_write_json(store.phase_dir(iteration) / "kl.json", kl_doc)
    _rebuild_ppo_reports(store, iteration)
    stats["loss"] = stats["policy_loss"] + sc.vf_coef * stats["value_loss"]
    return finish_round(
        store,
        iteration,
        stats,
        loss=stats["loss"],
        steps=stats["steps"],
        kl_mean=stats["kl_mean"],
        kl_coef=kl_coef,
        next_kl_coef=stats["next_kl_coef"],
        reward_mean=stats["reward_mean"],
    )


def _rebuild_ppo_reports(store: JobStore, upto: int) -> None:
    """The job-level ``rewards.csv`` and ``kl_metrics.json``: every round's files, in order
    (a rerun of a round replaces its rows instead of appending duplicates)."""
    header, rows, rounds = [], [], []
    for it in range(1, upto + 1):
        d = store.phase_dir(it)
        if (d / "rollouts.csv").exists():
            # the csv module, not splitlines(): a question id may hold a quoted newline or a raw U+2028
            with open(d / "rollouts.csv", newline="", encoding="utf-8") as f:
                header, *body = csv.reader(f)
            rows += body
            rounds.append(json.loads((d / "kl.json").read_text(encoding="utf-8")))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(store.dir / "rewards.csv", buf.getvalue())
    atomic_write_json(store.dir / "kl_metrics.json", {"target_kl": rounds[-1]["target_kl"], "rounds": rounds})


PPO = PPOStage()
