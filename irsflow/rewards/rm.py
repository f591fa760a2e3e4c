"""The ``rm`` reward: a learned reward model (seed 002 stage 2) used as a reward-contract scorer by
IRS, GRPO and PPO next to the rule and embedding rewards.

    scorer = RewardModelScorer(path)                      # or reward "rm" with scoring.reward_model = path
    scorer(RewardBatch(questions=[...], answers=[...]))   # sigmoid(score) in [0, 1] per answer

``path`` is a folder written by ``irsflow.training.reward_model.train_reward_model``: a LoRA
adapter with its trained score head on a sequence classifier of the base model, and ``META``
(``irsflow_rm.json``) naming the base. The classifier is loaded here (``load_classifier``) and the
trainer builds on the same loader, so both agree on the head. torch, transformers and peft load
only when a scorer is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from irsflow.errors import ConfigError
from irsflow.models import free_memory, load_tokenizer
from irsflow.rewards import RewardBatch, RewardEnv, register_reward

META = "irsflow_rm.json"


def load_classifier(model_path: str, tokenizer):
    """The base model with a fresh one-label score head (a sequence classifier), padding as the tokenizer."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


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
        self.model = PeftModel.from_pretrained(load_classifier(base, self.tokenizer), str(path)).eval()
        self.batch_size, self.torch = batch_size, torch

    def __call__(self, batch: RewardBatch) -> list[float | None]:
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
            )
            for q, a in zip(batch.questions, batch.answers)
        ]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
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
