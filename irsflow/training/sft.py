"""SFT phase: TRL ``SFTTrainer`` + PEFT LoRA on the selected answers.

    examples = sft_examples(rows, best)        # scored rows + chosen index -> prompt/completion
    stats = train_sft(model_path, adapter_in, examples, out_dir, learning_rate=..., lora=..., seed=...)

Examples are conversational prompt/completion pairs, so the loss covers only the assistant turn;
an example may carry a ``weight`` (per-example loss weight). Iteration 1 creates the adapter; later
iterations load the previous one as trainable and keep training it. Model loading, optimizer
choice and the atomic adapter save are shared with the other trainers (``irsflow.training.common``);
the adapter reloads with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from irsflow.errors import InputError
from irsflow.models import cuda_available, load_tokenizer
from irsflow.store import ProgressFn, no_progress
from irsflow.training.common import fit, progress_callback, trainable_model, training_args

log = logging.getLogger("irsflow.training.sft")


class _WeightedCollator:
    """Wraps the trainer's collator: pulls each example's ``weight`` out before collating and
    returns it as a tensor beside the batch (SFTTrainer has no native per-example weights)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        import torch

        weights = [float(e.get("weight", 1.0)) for e in examples]
        batch = self.inner([{k: v for k, v in e.items() if k != "weight"} for e in examples])
        batch["weight"] = torch.tensor(weights)
        return batch


def sft_examples(rows: list[dict], chosen: list[int] | list[list[int]]) -> list[dict]:
    """Scored rows + the chosen candidate index (or indexes) of each -> prompt/completion examples
    (empty answers dropped)."""
    out = []
    for row, picks in zip(rows, chosen):
        for b in [picks] if isinstance(picks, int) else picks:
            answer = row["candidates"][b]["text"]
            if answer.strip():
                out.append({"prompt": row["prompt"], "completion": [{"role": "assistant", "content": answer}]})
    return out


def _fused_loss_available() -> bool:
    # TRL 1.15 computes the SFT loss with a Triton kernel; without Triton (CPU wheels of torch)
    # that path fails, so we compute the same token-level NLL from the logits instead.
    return cuda_available() and importlib.util.find_spec("triton") is not None


def _trainer_class():
    """SFTTrainer with a plain cross-entropy loss where TRL's fused kernel cannot run."""
    import torch.nn.functional as F
    from trl import SFTTrainer

    class IrsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weight = inputs.pop("weight", None)
            if weight is None and _fused_loss_available():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k not in ("labels", "completion_mask")})
            logits = outputs.logits[:, :-1].float()
            target = labels[:, 1:]
            if weight is None:
                total = F.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum"
                )
                denom = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum().clamp(min=1)
                loss = total / denom
            else:
                # per-example loss weights (seed 004): each example's mean token NLL, weighted, / sum of weights
                nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
                per_example = nll.sum(1) / (target != -100).sum(1).clamp(min=1)
                w = weight.to(per_example)
                loss = (w * per_example).sum() / w.sum().clamp(min=1e-8)
            return (loss, outputs) if return_outputs else loss

    return IrsSFTTrainer


def _check_lengths(tokenizer, examples: list[dict], max_seq_length: int) -> None:
    """Examples whose prompt fills ``max_seq_length`` have no answer tokens left to learn from."""
    too_long = sum(
        len(tokenizer.apply_chat_template(e["prompt"], tokenize=True, add_generation_prompt=True, return_dict=False))
        >= max_seq_length
        for e in examples
    )
    if too_long == len(examples):
        raise InputError(
            f"irs_config.max_seq_length: {max_seq_length} tokens is shorter than every prompt; raise it or lower top_k"
        )
    if too_long:
        log.warning(
            "%d of %d examples have prompts longer than max_seq_length=%d and teach nothing",
            too_long,
            len(examples),
            max_seq_length,
        )


def train_sft(
    model_path: str,
    adapter_in: str | None,
    examples: list[dict],
    out_dir: Path,
    *,
    learning_rate: float,
    batch_size: int,
    epochs: float,
    max_seq_length: int,
    lora,
    seed: int,
    load_in_4bit: bool = False,
    grad_accum: int = 1,
    progress: ProgressFn = no_progress,
) -> dict:
    """Train and save the adapter to ``out_dir``; returns loss, steps, seconds, memory after release.
    ``grad_accum`` > 1 keeps the effective batch when ``batch_size`` was halved after running out of memory.
    Examples may carry a ``weight`` (per-example loss weight, default 1)."""
    from datasets import Dataset
    from trl import SFTConfig

    if not examples:
        raise ValueError("no non-empty answers were selected: nothing to train on")
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="right")
    _check_lengths(tokenizer, examples, max_seq_length)

    weighted = any("weight" in e for e in examples)
    if weighted:
        examples = [{**e, "weight": float(e.get("weight", 1.0))} for e in examples]

    def make_trainer(model, scratch):
        args = SFTConfig(
            **training_args(scratch, learning_rate, batch_size, epochs, max_seq_length, seed),
            gradient_accumulation_steps=grad_accum,
            gradient_checkpointing=False,
            remove_unused_columns=not weighted,
        )  # keep the weight column for the collator
        trainer = _trainer_class()(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(examples),
            processing_class=tokenizer,
            callbacks=[progress_callback(progress)],
        )
        if weighted:
            trainer.data_collator = _WeightedCollator(trainer.data_collator)
        return trainer

    loss, history, steps, mem_after = fit(
        lambda: trainable_model(model_path, adapter_in, lora, load_in_4bit), make_trainer, out_dir, "irsflow-sft-"
    )
    log.info("sft: %d examples, %d steps, loss %.4f", len(examples), steps, loss)
    return {
        "loss": loss,
        "losses": [h["loss"] for h in history],
        "steps": steps,
        "examples": len(examples),
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "seconds": time.perf_counter() - t0,
        "mem_after_release": mem_after,
    }
