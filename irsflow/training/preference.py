"""DPO and KTO on preference data with TRL + PEFT LoRA, one model resident: with LoRA the
reference is the same base model with the adapter switched off (no second copy in memory).

    stats = train_preference("dpo", model_path, adapter_in, pairs, out_dir, beta=0.1, ...)
    margins = pair_margins(model_path, adapter, pairs)   # log p(chosen) - log p(rejected) per pair

The adapter is written atomically to ``out_dir``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from irsflow.models import free_memory, load_model, load_tokenizer
from irsflow.store import ProgressFn, no_progress
from irsflow.training.common import fit, progress_callback, trainable_model, training_args

log = logging.getLogger("irsflow.training.preference")


def _dataset(kind: str, rows: list[dict]):
    from datasets import Dataset

    if kind == "dpo":
        return Dataset.from_list(
            [
                {
                    "prompt": r["prompt"],
                    "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}],
                }
                for r in rows
            ]
        )
    return Dataset.from_list(
        [
            {
                "prompt": r["prompt"],
                "completion": [{"role": "assistant", "content": r["completion"]}],
                "label": bool(r["label"]),
            }
            for r in rows
        ]
    )


def train_preference(
    kind: str,
    model_path: str,
    adapter_in: str | None,
    rows: list[dict],
    out_dir: Path,
    *,
    beta: float,
    learning_rate: float,
    batch_size: int,
    epochs: float,
    max_length: int,
    lora,
    seed: int,
    load_in_4bit: bool = False,
    progress: ProgressFn = no_progress,
) -> dict:
    if kind == "dpo":
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer
    elif kind == "kto":
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer
    else:
        raise ValueError(f"preference training: unknown kind {kind!r}")
    if not rows:
        raise ValueError(f"{kind}: no training rows")
    from irsflow.training import trl_compat

    trl_compat.install()
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="right")

    def make_trainer(model, scratch):
        args = Config(**training_args(scratch, learning_rate, batch_size, epochs, max_length, seed), beta=beta)
        return Trainer(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=_dataset(kind, rows),
            processing_class=tokenizer,
            callbacks=[progress_callback(progress)],
        )

    loss, history, steps, mem_after = fit(
        lambda: trainable_model(model_path, adapter_in, lora, load_in_4bit), make_trainer, out_dir, f"irsflow-{kind}-"
    )
    log.info("%s: %d rows, %d steps, loss %.4f", kind, len(rows), steps, loss)
    return {
        "kind": kind,
        "loss": loss,
        "steps": steps,
        "rows": len(rows),
        "history": history,
        "seconds": time.perf_counter() - t0,
        "mem_after_release": mem_after,
    }


def pair_margins(model_path: str, adapter: str | None, pairs: list[dict]) -> list[float]:
    """Per pair: sum log p(chosen) - sum log p(rejected), each after the chat-templated prompt."""
    import torch

    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, adapter=adapter).eval()

    def logp(prompt, text) -> float:
        p = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids_p = tokenizer(p, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ids_p + tokenizer(text, add_special_tokens=False)["input_ids"]], device=model.device)
        with torch.inference_mode():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        target = ids[0, 1:]
        return float(lp[torch.arange(len(target)), target][len(ids_p) - 1 :].sum())

    try:
        return [logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in pairs]
    finally:
        model = None  # noqa: F841 - drop the last reference before freeing
        free_memory()
