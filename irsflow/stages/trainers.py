"""The TRAINING phase of each stage: what differs between stages, and only that.

Every trainer takes ``(store, req, iteration, inputs, progress)``, reads the round's files
(candidates, scores, samples), writes the adapter atomically to ``checkpoints/iter_<n>``, appends
a ``TRAINING`` row to ``metrics.jsonl`` and returns a JSON-able summary with at least ``adapter``,
``loss`` and ``seconds``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import random
import time

from irsflow.config import TrainRequest
from irsflow.dataset import load_questions
from irsflow.models import resolve_model
from irsflow.onpolicy import mix_rows
from irsflow.phases import run_sft
from irsflow.resume import IterationInputs, score_summary_path
from irsflow.rewards import RewardEnv, build_rewards
from irsflow.rewards.similarity import load_similarity
from irsflow.stages.data import kto_examples, load_anchors, onpolicy_examples, preference_pairs, scored_answers
from irsflow.store import JobStore, ProgressFn, atomic_write_json, atomic_write_text, hash_path, write_jsonl
from irsflow.weights import DynamicWeights

log = logging.getLogger("irsflow.stages")


def _finish(store: JobStore, iteration: int, stats: dict, **row) -> dict:
    out_dir = store.checkpoint(iteration)
    store.metric(iteration, "TRAINING", **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()},
                 seconds=round(stats["seconds"], 3), mem_after_release=stats.get("mem_after_release"))
    return {"adapter": str(out_dir), "sha256": hash_path(out_dir), **stats}


def train_irs(store, req, iteration, inputs, progress):
    return run_sft(store, req, iteration, inputs.adapter, progress=progress)


def train_onpolicy(store: JobStore, req: TrainRequest, iteration: int, inputs: IterationInputs,
                   progress: ProgressFn) -> dict:
    """Weighted LoRA SFT on ``mix_ratio`` on-policy rows (weight = score) + anchor rows (weight 1)."""
    from irsflow.sft import train_sft

    cfg, sc = req.irs_config, req.stage_config
    on = onpolicy_examples(store.phase_dir(iteration) / "onpolicy.jsonl")
    rows = mix_rows(on, load_anchors(req) if sc.mix_ratio < 1 else [], sc.mix_ratio, seed=req.seed + iteration)
    write_jsonl(store.phase_dir(iteration) / "train_rows.jsonl", rows)
    stats = train_sft(resolve_model(req.model_id), inputs.adapter, [{k: r[k] for k in ("prompt", "completion", "weight")}
                                                                  for r in rows],
                      store.checkpoint(iteration), learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                      epochs=cfg.sft_epochs, max_seq_length=cfg.max_seq_length, lora=cfg.lora,
                      seed=req.seed + iteration, load_in_4bit=cfg.load_in_4bit, progress=progress)
    n_on = sum(r["source"] == "onpolicy" for r in rows)
    mix = {"onpolicy": n_on, "anchor": len(rows) - n_on, "onpolicy_share": round(n_on / len(rows), 4),
           "mean_weight": round(sum(r["weight"] for r in rows) / len(rows), 4)}
    return _finish(store, iteration, {**stats, "mix": mix}, loss=stats["loss"], steps=stats["steps"],
                   examples=len(rows), **mix)


def _train_preference(kind: str):
    def train(store: JobStore, req: TrainRequest, iteration: int, inputs: IterationInputs, progress: ProgressFn) -> dict:
        from irsflow.dpo import train_preference

        cfg = req.irs_config
        rows = preference_pairs(store, req, iteration) if kind == "dpo" else kto_examples(store, req, iteration)
        write_jsonl(store.phase_dir(iteration) / "pairs.jsonl", rows)
        stats = train_preference(kind, resolve_model(req.model_id), inputs.adapter, rows, store.checkpoint(iteration),
                                 beta=req.stage_config.beta, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                                 epochs=cfg.sft_epochs, max_length=cfg.max_seq_length, lora=cfg.lora,
                                 seed=req.seed + iteration, load_in_4bit=cfg.load_in_4bit, progress=progress)
        hist = stats.pop("history")
        margins = [h["rewards/margins"] for h in hist if "rewards/margins" in h]
        extra = {"margin_first": margins[0], "margin_last": margins[-1]} if margins else {}
        return _finish(store, iteration, {**stats, **extra}, loss=stats["loss"], steps=stats["steps"],
                       rows=len(rows), **extra)
    train.__name__ = f"train_{kind}"
    return train


def train_grpo_round(store: JobStore, req: TrainRequest, iteration: int, inputs: IterationInputs,
                     progress: ProgressFn, teacher_api_key: str | None = None) -> dict:
    """GRPOTrainer on the question set with the request's rewards; the round's per-reward means
    move the dynamic weights that the next round passes as ``reward_weights``."""
    from irsflow.grpo import train_grpo

    cfg = req.irs_config
    env = RewardEnv(settings=req.scoring, similarity=load_similarity(req.scoring))
    if req.teacher is not None:
        env.extras.update(teacher=req.teacher.with_key(teacher_api_key), teacher_usage_path=store.dir / "teacher_usage.csv")
    rewards = build_rewards(list(inputs.weights), env)
    stats = train_grpo(resolve_model(req.model_id), inputs.adapter, load_questions(req.dataset, req.n_questions),
                       rewards, inputs.weights, store.checkpoint(iteration), system_prompt=req.system_prompt,
                       top_k=req.top_k, num_generations=cfg.n_candidates, max_new_tokens=cfg.max_new_tokens,
                       learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, epochs=cfg.sft_epochs,
                       beta=req.stage_config.beta, lora=cfg.lora, seed=req.seed + iteration, sampling=cfg.sampling,
                       load_in_4bit=cfg.load_in_4bit, progress=progress)
    curve = stats["curve"]
    atomic_write_json(store.phase_dir(iteration) / "grpo_curve.json", curve)
    means = {n: _mean([c[n] for c in curve if c.get(n) is not None]) for n in inputs.weights}
    dw = DynamicWeights.resume(inputs.weights, inputs.history, cfg.dw_config)
    explain = dw.observe(means)
    avg = _mean([c["reward"] for c in curve if c.get("reward") is not None])
    summary = {"avg_reward": avg, "best_avg_reward": _mean([c["reward"] for c in curve[-1:] if c.get("reward") is not None]),
               "reward_breakdown": means, "weights": dict(inputs.weights), "next_weights": explain["weights_after"],
               "slopes": explain["slopes"], "weights_updated": explain["updated"], "scorer": env.similarity.kind}
    atomic_write_json(score_summary_path(store, iteration), summary)
    store.metric(iteration, "METRICS", **summary)
    store.update_status(metrics={"avg_reward": avg, "reward_breakdown": means, "current_weights": summary["next_weights"]})
    return _finish(store, iteration, {**stats, **summary}, loss=stats["loss"], steps=stats["steps"], avg_reward=avg)


def _mean(xs: list) -> float | None:
    return round(sum(xs) / len(xs), 6) if xs else None


def train_ppo_round(store: JobStore, req: TrainRequest, iteration: int, inputs: IterationInputs,
                    progress: ProgressFn) -> dict:
    """PPO on the round's scored rollouts (reward = weighted total / sum of weights), reference =
    the model the job started from; writes the round's rollouts.csv/kl.json and rebuilds the job's
    ``rewards.csv`` and ``kl_metrics.json`` over all rounds so far."""
    from irsflow.ppo import train_ppo

    cfg, sc = req.irs_config, req.stage_config
    rollouts, keys = [], []
    for s, row, j, c, score in scored_answers(store, iteration):
        rollouts.append({"prompt": row["prompt"], "answer": c["text"], "reward": score,
                         "stopped": c["finish_reason"] == "stop"})
        keys.append((s["id"], j))
    prev = store.phase_dir(inputs.previous) / "kl.json" if inputs.previous else None
    kl_coef = json.loads(prev.read_text())["next_kl_coef"] if prev and prev.exists() else sc.init_kl_coef
    stats = train_ppo(resolve_model(req.model_id), inputs.adapter, store.read_config().get("init_adapter_path"),
                      rollouts, store.checkpoint(iteration), settings=sc, kl_coef=kl_coef,
                      learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length,
                      lora=cfg.lora, seed=req.seed + iteration, load_in_4bit=cfg.load_in_4bit, progress=progress)
    per_kl, change = stats.pop("kl"), stats.pop("logp_change")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["round", "id", "candidate", "reward", "kl", "kl_penalty", "logp_change"])
    for (qid, j), r, k, d in zip(keys, rollouts, per_kl, change):
        w.writerow([iteration, qid, j, f"{r['reward']:.6f}", f"{k:.6f}", f"{-kl_coef * k:.6f}", f"{d:.6f}"])
    atomic_write_text(store.phase_dir(iteration) / "rollouts.csv", buf.getvalue())
    kl_doc = {"round": iteration, **{k: stats[k] for k in ("kl_coef", "next_kl_coef", "target_kl", "kl_mean",
                                                            "kl_after", "policy_loss", "value_loss", "clipfrac",
                                                            "approx_kl", "reward_mean", "steps")}}
    atomic_write_json(store.phase_dir(iteration) / "kl.json", kl_doc)
    _rebuild_ppo_reports(store, iteration)
    stats["loss"] = stats["policy_loss"] + sc.vf_coef * stats["value_loss"]
    return _finish(store, iteration, stats, loss=stats["loss"], steps=stats["steps"], kl_mean=stats["kl_mean"],
                   kl_coef=kl_coef, next_kl_coef=stats["next_kl_coef"], reward_mean=stats["reward_mean"])


def _rebuild_ppo_reports(store: JobStore, upto: int) -> None:
    """The seed's job-level ``rewards.csv`` and ``kl_metrics.json``: every round's files, in order
    (a rerun of a round replaces its rows instead of appending duplicates)."""
    lines, rounds = [], []
    for it in range(1, upto + 1):
        d = store.phase_dir(it)
        if (d / "rollouts.csv").exists():
            body = (d / "rollouts.csv").read_text(encoding="utf-8").splitlines()
            lines += body if not lines else body[1:]
            rounds.append(json.loads((d / "kl.json").read_text(encoding="utf-8")))
    atomic_write_text(store.dir / "rewards.csv", "\n".join(lines) + "\n")
    atomic_write_json(store.dir / "kl_metrics.json", {"target_kl": rounds[-1]["target_kl"], "rounds": rounds})


def train_rm(store: JobStore, req: TrainRequest, iteration: int, inputs: IterationInputs,
             progress: ProgressFn) -> dict:
    """RewardTrainer on the pairs minus a seeded held-out share; accuracy on the held-out pairs
    (chosen scored above rejected) goes to ``rm_eval.json`` and the metrics row."""
    from irsflow.rewards import RewardBatch
    from irsflow.reward_model import RewardModelScorer, train_reward_model

    cfg, sc = req.irs_config, req.stage_config
    # the `rm` scorer sees (question, answer) in a user/assistant turn, so it is trained on exactly that
    pairs = [{**p, "prompt": [{"role": "user", "content": _question(p)}]} for p in preference_pairs(store, req, iteration)]
    rng = random.Random(req.seed)
    shuffled = rng.sample(pairs, len(pairs))
    n_held = int(round(len(pairs) * sc.holdout)) if len(pairs) > 1 else 0
    held, train = shuffled[:n_held], shuffled[n_held:]
    write_jsonl(store.phase_dir(iteration) / "pairs.jsonl", [{**p, "heldout": i < n_held} for i, p in enumerate(shuffled)])
    t0 = time.perf_counter()
    stats = train_reward_model(resolve_model(req.model_id), train, store.checkpoint(iteration),
                               learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, epochs=cfg.sft_epochs,
                               max_length=cfg.max_seq_length, lora=cfg.lora, seed=req.seed + iteration,
                               progress=progress)
    accuracy = None
    if held:
        scorer = RewardModelScorer(store.checkpoint(iteration))
        try:
            q = [_question(p) for p in held]
            chosen = scorer(RewardBatch(questions=q, answers=[p["chosen"] for p in held]))
            rejected = scorer(RewardBatch(questions=q, answers=[p["rejected"] for p in held]))
        finally:
            scorer.close()
        accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(held)
    atomic_write_json(store.phase_dir(iteration) / "rm_eval.json",
                      {"heldout_pairs": len(held), "train_pairs": len(train), "accuracy": accuracy})
    stats = {**stats, "heldout_accuracy": accuracy, "seconds": time.perf_counter() - t0}
    return _finish(store, iteration, stats, loss=stats["loss"], steps=stats["steps"], pairs=len(train),
                   heldout_pairs=len(held), heldout_accuracy=accuracy)


def _question(pair: dict) -> str:
    return pair.get("question") or next(m["content"] for m in reversed(pair["prompt"]) if m["role"] == "user")


TRAINERS = {"IRS": train_irs, "ONPOLICY": train_onpolicy, "DPO": _train_preference("dpo"),
            "KTO": _train_preference("kto"), "GRPO": train_grpo_round, "PPO": train_ppo_round, "RM": train_rm}
