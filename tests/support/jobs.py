"""Requests, jobs, adapters and multiple-choice sets on the tiny model (irsflow.models.tiny), shared
by the unit, flows and ops tiers. Library imports sit inside the functions: importing this module
loads nothing heavy."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_request(model: Path, **overrides) -> dict:
    """A fast request on the tiny model; nested dicts in overrides are merged one level deep. MLflow
    tracking is off (it is the default for real jobs; tests/flows/test_train_flow.py turns it on)."""
    req = {
        "model_id": str(model),
        "n_questions": 6,
        "top_k": 2,
        "seed": 3,
        "track": False,
        "irs_config": {
            "n_iterations": 2,
            "n_candidates": 4,
            "max_new_tokens": 24,
            "learning_rate": 1e-3,
            "batch_size": 2,
            "max_seq_length": 2048,
            "gen_batch_size": 8,
        },
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(req.get(k), dict):
            req[k] = {**req[k], **v}
        else:
            req[k] = v
    return req


def job_with_random_adapter(tiny_model, seed: int):
    """A finished-looking job whose final adapter is a randomly initialised LoRA (seeded), with one
    METRICS row and one sample: what the eval gate registers and evaluates."""
    import torch
    from peft import LoraConfig, get_peft_model

    from irsflow.jobs.job import create_job
    from irsflow.models import load_model

    store = create_job(tiny_request(tiny_model, seed=seed))
    torch.manual_seed(seed)
    model = get_peft_model(
        load_model(str(tiny_model)), LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False)
    )
    model.save_pretrained(store.checkpoint("final"))
    store.metric(1, "METRICS", avg_reward=0.5, reward_breakdown={"conc": 0.5})
    store.samples_path.write_text('{"iter": 1, "id": "q", "question": "q", "chosen": "a"}\n')
    return store


def mc_keyed_to(tiny_model, adapter, path) -> str:
    """30 questions whose answer key is ``adapter``'s own picks."""
    from irsflow.evals.answers import Group, answer_suites
    from irsflow.evals.mc import MCItem

    items = [
        MCItem(
            f"m{i}",
            f"Question {i}: which word fits item {i * 7 % 13}?",
            {"A": "alpha", "B": "beta", "C": "gamma", "D": "delta"},
            "A",
        )
        for i in range(30)
    ]
    picks, _ = answer_suites(
        str(tiny_model), str(adapter), {"mc": Group([i.prompt() for i in items], letters=[list("ABCD")] * len(items))}
    )
    path.write_text(
        "".join(
            json.dumps({"id": i.id, "question": i.question, "choices": i.choices, "answer": p[0]}) + "\n"
            for i, p in zip(items, picks["mc"])
        )
    )
    return str(path)
