"""GRPO with TRL's ``GRPOTrainer`` on the same reward-contract scorers as IRS.

    funcs = reward_funcs(rewards)                       # {name: Reward} -> TRL reward functions
    stats = train_grpo(model_path, adapter_in, questions, rewards, weights, out_dir, ...)

Each scorer becomes a TRL reward function ``f(prompts, completions, **columns) -> list[float|None]``
named after the reward (TRL logs per-function means under that name); the question's joined
context and reference travel as dataset columns, so ``faith``/``conc``/``ref`` see them. An
abstaining scorer returns None for the item, which TRL leaves out of the weighted sum, as IRS
does. ``weights`` become ``reward_weights`` (the job's dynamic weights may set them per round).
The same ``seed`` gives the same adapter, curve and loss, whatever ran before in the process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from irsflow.loop.generate import build_messages
from irsflow.models import load_tokenizer
from irsflow.rewards import Reward, RewardBatch
from irsflow.store import ProgressFn, no_progress
from irsflow.training.common import fit, progress_callback, trainable_model, training_args

log = logging.getLogger("irsflow.training.grpo")


def _text(x) -> str:
    return x if isinstance(x, str) else (x[-1]["content"] if x else "")


def reward_funcs(rewards: dict[str, Reward]) -> list:
    out = []
    for name, reward in rewards.items():

        def f(prompts, completions, context=None, reference=None, _reward=reward, **_):
            n = len(completions)
            batch = RewardBatch(
                questions=[_text([m for m in p if m["role"] == "user"]) for p in prompts],
                answers=[_text(c) for c in completions],
                contexts=list(context) if context is not None else [""] * n,
                references=list(reference) if reference is not None else [None] * n,
            )
            return list(_reward(batch))

        f.__name__ = name
        out.append(f)
    return out


def train_grpo(
    model_path: str,
    adapter_in: str | None,
    questions,
    rewards: dict[str, Reward],
    weights: dict[str, float],
    out_dir: Path,
    *,
    system_prompt: str,
    top_k: int,
    num_generations: int,
    max_new_tokens: int,
    learning_rate: float,
    batch_size: int,
    epochs: float,
    beta: float,
    lora,
    seed: int,
    sampling=None,
    load_in_4bit: bool = False,
    progress: ProgressFn = no_progress,
) -> dict:
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from irsflow.training import trl_compat

    trl_compat.install()
    if batch_size % num_generations:
        raise ValueError(f"grpo: batch_size {batch_size} must be a multiple of num_generations {num_generations}")
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_path, padding_side="left")
    rows = [
        {
            "prompt": build_messages(q, top_k, system_prompt),
            "context": "\n\n".join(q.top_contexts(top_k)),
            "reference": q.reference or "",
        }
        for q in questions
    ]
    names = list(rewards)

    def make_trainer(model, scratch):
        args = GRPOConfig(
            **training_args(scratch, learning_rate, batch_size, epochs, None, seed),
            num_generations=num_generations,
            max_completion_length=max_new_tokens,
            beta=beta,
            reward_weights=[float(weights[n]) for n in names],
            temperature=getattr(sampling, "temperature", 1.0),
            top_p=getattr(sampling, "top_p", 1.0),
        )
        return GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs(rewards),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[progress_callback(progress)],
        )

    def load():
        # A new LoRA's A matrices come from the global RNG, and GRPOTrainer seeds it only once the
        # model exists: unseeded, round 1's adapter depended on whatever ran earlier in the process
        # (the sampling stages are shielded by their GENERATING phase's manual_seed; GRPO has none).
        set_seed(seed)
        return trainable_model(model_path, adapter_in, lora, load_in_4bit)

    loss, history, steps, mem_after = fit(load, make_trainer, out_dir, "irsflow-grpo-")
    curve = [
        {"step": h.get("step"), "reward": h.get("reward"), **{n: h.get(f"rewards/{n}/mean") for n in names}}
        for h in history
    ]
    log.info(
        "grpo: %d prompts x %d generations, %d steps, final reward %s",
        len(rows),
        num_generations,
        steps,
        curve[-1]["reward"] if curve else None,
    )
    return {
        "loss": loss,
        "steps": steps,
        "curve": curve,
        "seconds": time.perf_counter() - t0,
        "mem_after_release": mem_after,
    }
