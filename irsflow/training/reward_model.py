"""Training a reward model (seed 002 stage 2): TRL ``RewardTrainer`` on preference pairs, a scalar
head on the base model with LoRA. The result is scored by the ``rm`` reward
(``irsflow.rewards.rm``), usable by IRS, GRPO and PPO next to the rule and embedding rewards.

    stats = train_reward_model(model_path, pairs, out_dir, ...)      # pairs: prompt/chosen/rejected
    scorer = RewardModelScorer(out_dir)                             # irsflow.rewards.rm, or reward "rm"
    scorer(RewardBatch(questions=[...], answers=[...]))             # sigmoid(score) in [0, 1]

``out_dir`` holds the adapter (with the trained score head) and ``irsflow_rm.json`` naming the base.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from irsflow.models import load_tokenizer
from irsflow.rewards.rm import META, load_classifier
from irsflow.store import ProgressFn, atomic_write_json, no_progress
from irsflow.training.common import fit, progress_callback, training_args

log = logging.getLogger("irsflow.training.reward_model")


def train_reward_model(
    model_path: str,
    pairs: list[dict],
    out_dir: Path,
    *,
    learning_rate: float,
    batch_size: int,
    epochs: float,
    max_length: int,
    lora,
    seed: int,
    progress: ProgressFn = no_progress,
) -> dict:
    """Train the scorer on ``pairs`` and write it to ``out_dir``; returns loss, steps, pairs, the
    step log, seconds and memory after release."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import RewardConfig, RewardTrainer

    if not pairs:
        raise ValueError("reward model: no preference pairs")
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="right")
    rows = [
        {
            "prompt": p["prompt"],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in pairs
    ]

    def load():
        return get_peft_model(
            load_classifier(model_path, tokenizer),
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="SEQ_CLS",
            ),
        )  # SEQ_CLS keeps the new score head trainable and saved with the adapter

    def make_trainer(model, scratch):
        args = RewardConfig(**training_args(scratch, learning_rate, batch_size, epochs, max_length, seed))
        return RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[progress_callback(progress)],
        )

    loss, history, steps, mem_after = fit(load, make_trainer, out_dir, "irsflow-rm-")
    atomic_write_json(Path(out_dir) / META, {"base_model": model_path, "pairs": len(pairs), "steps": steps})
    log.info("reward model: %d pairs, %d steps, loss %.4f", len(pairs), steps, loss)
    return {
        "loss": loss,
        "steps": steps,
        "pairs": len(pairs),
        "history": history,
        "seconds": time.perf_counter() - t0,
        "mem_after_release": mem_after,
    }
