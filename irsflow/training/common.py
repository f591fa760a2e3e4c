"""What every irsflow trainer (SFT, DPO/KTO, GRPO, PPO, reward model) does the same way.

    model = trainable_model(model_path, adapter_in, lora, load_in_4bit)      # base + LoRA to train
    args = SomeTRLConfig(**training_args(scratch, lr, batch, epochs, max_len, seed), ...)
    loss, history, steps, mem = fit(load_fn, make_trainer, out_dir, "irsflow-x-")

``fit`` loads the model, builds the trainer on a scratch folder, trains, writes the adapter
atomically (temp folder, then rename) and frees the model whatever happened. ``training_args``
seeds the run and picks CPU or bf16 and the optimizer (``paged_adamw_8bit`` on CUDA with
bitsandbytes, plain AdamW otherwise). torch, transformers and peft load inside the functions.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from irsflow.models import cuda_available, free_memory, load_model
from irsflow.store import ProgressFn, atomic_dir


def pick_optimizer() -> str:
    if cuda_available() and importlib.util.find_spec("bitsandbytes") is not None:
        return "paged_adamw_8bit"
    return "adamw_torch"


def trainable_model(model_path: str, adapter_in: str | None, lora, load_in_4bit: bool = False):
    """The base model with the adapter to train: ``adapter_in`` continued, or a fresh LoRA."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = load_model(model_path, adapter=adapter_in, load_in_4bit=load_in_4bit, trainable=True)
    if adapter_in is None:
        if load_in_4bit:
            model = prepare_model_for_kbit_training(model)
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def progress_callback(progress: ProgressFn):
    """A transformers callback reporting the share of steps done (0-100) after each step."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            progress(100.0 * state.global_step / max(1, state.max_steps))

    return _Progress()


def training_args(
    scratch: str, learning_rate: float, batch_size: int, epochs: float, max_length: int | None, seed: int
) -> dict:
    """What every irsflow trainer sets the same way: constant LR, a step log, no checkpoints, CPU
    or bf16 by device, the optimizer of ``pick_optimizer``."""
    on_cpu = not cuda_available()
    return dict(
        output_dir=scratch,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        **({} if max_length is None else {"max_length": max_length}),
        seed=seed,
        data_seed=seed,
        optim=pick_optimizer(),
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=on_cpu,
        bf16=not on_cpu,
        lr_scheduler_type="constant",
        warmup_steps=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def fit(load_model_fn, make_trainer, out_dir: Path, prefix: str) -> tuple[float, list[dict], int, int]:
    """Load the trainable model, build the trainer on a scratch folder, train (step losses to our
    logger, not stdout), save the adapter atomically, then free the model whatever happened.
    Returns (mean training loss, the log rows with a loss, steps, memory in use after release)."""
    from transformers import PrinterCallback

    model = load_model_fn()
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
            trainer = make_trainer(model, scratch)
            trainer.remove_callback(PrinterCallback)
            out = trainer.train()
            with atomic_dir(Path(out_dir)) as tmp:
                trainer.model.save_pretrained(tmp)
            history = [h for h in trainer.state.log_history if "loss" in h]
            steps = trainer.state.global_step
            del trainer
    finally:
        del model
        mem_after = free_memory()
    return float(out.training_loss), history, steps, mem_after
