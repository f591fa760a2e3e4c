"""A learned reward model (seed 002 stage 2): TRL ``RewardTrainer`` on preference pairs, a scalar
head on the base model with LoRA; the result is a reward-contract scorer (``rm``) usable by IRS,
GRPO and PPO next to the rule and embedding rewards.

    stats = train_reward_model(model_path, pairs, out_dir, ...)      # pairs: prompt/chosen/rejected
    scorer = RewardModelScorer(out_dir)                             # or reward "rm" with scoring.reward_model
    scorer(RewardBatch(questions=[...], answers=[...]))             # sigmoid(score) in [0, 1]

``out_dir`` holds the adapter (with the trained score head) and ``irsflow_rm.json`` naming the base.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from irsflow.errors import ConfigError
from irsflow.models import free_memory, load_tokenizer
from irsflow.rewards import RewardBatch, RewardEnv, register_reward
from irsflow.sft import fit, progress_callback, training_args
from irsflow.store import ProgressFn, atomic_write_json, no_progress

log = logging.getLogger("irsflow.rm")
META = "irsflow_rm.json"


def _classifier(model_path: str, tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def train_reward_model(model_path: str, pairs: list[dict], out_dir: Path, *, learning_rate: float, batch_size: int,
                       epochs: float, max_length: int, lora, seed: int, progress: ProgressFn = no_progress) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import RewardConfig, RewardTrainer

    if not pairs:
        raise ValueError("reward model: no preference pairs")
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="right")
    rows = [{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]

    def load():
        return get_peft_model(_classifier(model_path, tokenizer), LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
            task_type="SEQ_CLS"))  # SEQ_CLS keeps the new score head trainable and saved with the adapter

    def make_trainer(model, scratch):
        args = RewardConfig(**training_args(scratch, learning_rate, batch_size, epochs, max_length, seed))
        return RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             callbacks=[progress_callback(progress)])

    loss, history, steps, mem_after = fit(load, make_trainer, out_dir, "irsflow-rm-")
    atomic_write_json(Path(out_dir) / META, {"base_model": model_path, "pairs": len(pairs), "steps": steps})
    log.info("reward model: %d pairs, %d steps, loss %.4f", len(pairs), steps, loss)
    return {"loss": loss, "steps": steps, "pairs": len(pairs), "history": history,
            "seconds": time.perf_counter() - t0, "mem_after_release": mem_after}


class RewardModelScorer:
    """sigmoid(score of the chat-templated question + answer), batched; loads once per scoring phase."""
    name = "rm"
    penalty = False

    def __init__(self, path: str | Path, batch_size: int = 16):
        import torch
        from peft import PeftModel

        meta = Path(path) / META
        if not meta.is_file():
            raise ConfigError(f"scoring.reward_model: {path} is not a trained reward model (no {META})")
        base = json.loads(meta.read_text(encoding="utf-8"))["base_model"]
        self.tokenizer = load_tokenizer(base, padding_side="left")
        self.model = PeftModel.from_pretrained(_classifier(base, self.tokenizer), str(path)).eval()
        self.batch_size, self.torch = batch_size, torch

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                                    tokenize=False) for q, a in zip(batch.questions, batch.answers)]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with self.torch.inference_mode():
                out += self.torch.sigmoid(self.model(**enc).logits[:, 0].float()).tolist()
        return out

    def close(self) -> None:
        self.model = None
        free_memory()


def _factory(env: RewardEnv) -> RewardModelScorer:
    path = getattr(env.settings, "reward_model", None)
    if not path:
        raise ConfigError("reward 'rm' needs scoring.reward_model (a folder written by train_reward_model)")
    return RewardModelScorer(path)


register_reward("rm", _factory)
