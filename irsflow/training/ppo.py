"""PPO for the RLAIF stage of seed 001: a LoRA policy with a value head, the SFT model frozen as
the reference, a KL penalty whose coefficient adapts toward ``target_kl``, rewards from the same
reward-contract scorers as IRS (teacher included where configured).

TRL 1.15, the version this stack pins, no longer ships PPO (``PPOTrainer``, ``PPOConfig`` and the
value-head models were removed, ``trl.experimental.ppo`` included), so this is a compact PPO of its
own over rollouts that the shared GENERATING/SCORING phases already produced, one model resident
at a time:

    1. reference pass: the frozen SFT model (base + its adapter, or the base) gives the log-prob of
       every answer token; released;
    2. policy: base + the trainable LoRA (continued from the previous round) + a linear value head
       on the last hidden state; log-probs and values before any update; per-token reward
       ``-kl_coef * (logp - logp_ref)`` plus the scorer's reward on the last token; GAE;
    3. ``ppo_epochs`` passes of clipped policy loss + ``vf_coef`` * clipped value loss;
    4. adapter and ``value_head.safetensors`` written atomically; the next coefficient is
       ``kl_coef * (1 + 0.5 * clip(kl / target_kl - 1, -0.2, 0.2))`` (Ziegler et al.'s proportional
       controller, at most +-10% a round).

    stats = train_ppo(model_path, adapter_in, reference, rollouts, out_dir, settings=sc, kl_coef=0.2, ...)
    # rollouts: [{"prompt": [messages], "answer": str, "reward": float, "stopped": bool}]
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from irsflow.models import free_memory, load_model, load_tokenizer, stop_token_ids
from irsflow.store import ProgressFn, atomic_dir, no_progress
from irsflow.training.common import trainable_model

log = logging.getLogger("irsflow.training.ppo")
VALUE_HEAD = "value_head.safetensors"


def encode(tokenizer, rollouts: list[dict], max_len: int) -> list[tuple[list[int], int]]:
    """Per rollout: (prompt + answer token ids, prompt length); a stopped answer keeps its end token
    so the policy learns when to stop; the answer is cut to fit ``max_len``."""
    stop = stop_token_ids(tokenizer)[-1]
    out = []
    for r in rollouts:
        text = tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        p = tokenizer(text, add_special_tokens=False)["input_ids"]
        a = tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + ([stop] if r.get("stopped", True) else [])
        a = a[: max(1, max_len - len(p))]
        out.append((p + a, len(p)))
    return out


def _forward(model, head, seqs, pad_id: int, with_values: bool):
    """Log-probs (and values) of each sequence's answer tokens, as one 1-D tensor per sequence."""
    import torch

    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (s, _) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    dev = next(model.parameters()).device
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), output_hidden_states=with_values)
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, ids[:, 1:].to(dev).unsqueeze(-1)).squeeze(-1)
    vals = head(out.hidden_states[-1][:, :-1].float()).squeeze(-1) if with_values else None
    # token t of the answer is predicted at position t - 1
    lp = [logp[i, p - 1 : len(s) - 1] for i, (s, p) in enumerate(seqs)]
    vs = [vals[i, p - 1 : len(s) - 1] for i, (s, p) in enumerate(seqs)] if with_values else None
    return lp, vs


def gae(rewards, values, gamma: float, lam: float):
    """Generalised advantage estimation over one answer (1-D tensors), and the value targets."""
    import torch

    adv = torch.zeros_like(rewards)
    last = 0.0
    for t in reversed(range(len(rewards))):
        nxt = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * nxt - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, adv + values


def next_kl_coef(kl_coef: float, kl: float, target: float) -> float:
    err = min(0.2, max(-0.2, kl / target - 1.0))
    return kl_coef * (1.0 + 0.5 * err)


def _value_head(model, adapter_in: str | None):
    import torch
    from safetensors.torch import load_file

    head = torch.nn.Linear(model.config.hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    if adapter_in and (Path(adapter_in) / VALUE_HEAD).exists():
        head.load_state_dict(load_file(str(Path(adapter_in) / VALUE_HEAD)))
    return head.to(next(model.parameters()).device)


def train_ppo(
    model_path: str,
    adapter_in: str | None,
    reference: str | None,
    rollouts: list[dict],
    out_dir: Path,
    *,
    settings,
    kl_coef: float,
    learning_rate: float,
    batch_size: int,
    max_seq_length: int,
    lora,
    seed: int,
    load_in_4bit: bool = False,
    progress: ProgressFn = no_progress,
) -> dict:
    """One PPO update over ``rollouts``; ``settings``: the request's stage_config (clip_range,
    vf_coef, ppo_epochs, gamma, lam, target_kl). Returns per-rollout KL and the round's statistics."""
    import torch
    from safetensors.torch import save_file

    if not rollouts:
        raise ValueError("ppo: no rollouts")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_path, padding_side="right")
    seqs = encode(tokenizer, rollouts, max_seq_length)
    chunks = [list(range(i, min(i + batch_size, len(seqs)))) for i in range(0, len(seqs), batch_size)]

    ref_model = load_model(model_path, adapter=reference, load_in_4bit=load_in_4bit).eval()
    try:
        with torch.inference_mode():
            ref_lp = [
                x.cpu()
                for c in chunks
                for x in _forward(ref_model, None, [seqs[i] for i in c], tokenizer.pad_token_id, False)[0]
            ]
    finally:
        del ref_model
        free_memory()
    progress(10.0)

    model = trainable_model(model_path, adapter_in, lora, load_in_4bit)
    try:
        head = _value_head(model, adapter_in)
        model.eval()
        with torch.no_grad():
            old_lp, old_v = [], []
            for c in chunks:
                lp, vs = _forward(model, head, [seqs[i] for i in c], tokenizer.pad_token_id, True)
                old_lp += [x.cpu() for x in lp]
                old_v += [x.cpu() for x in vs]
        kl = [float((o - r).sum()) for o, r in zip(old_lp, ref_lp)]
        adv, ret = [], []
        for o, r, v, roll in zip(old_lp, ref_lp, old_v, rollouts):
            rew = -kl_coef * (o - r)
            rew[-1] += float(roll["reward"])
            a, g = gae(rew, v, settings.gamma, settings.lam)
            adv.append(a)
            ret.append(g)
        flat = torch.cat(adv)
        mean, std = flat.mean(), flat.std() if flat.numel() > 1 else torch.tensor(1.0)
        adv = [(a - mean) / (std + 1e-8) for a in adv]

        model.train()
        params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=learning_rate)
        stats = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": []}
        gen = torch.Generator().manual_seed(seed)
        steps, total = 0, settings.ppo_epochs * len(chunks)
        for _ in range(settings.ppo_epochs):
            order = torch.randperm(len(seqs), generator=gen).tolist()
            for c in [order[i : i + batch_size] for i in range(0, len(order), batch_size)]:
                lp, vs = _forward(model, head, [seqs[i] for i in c], tokenizer.pad_token_id, True)
                lp, vs = torch.cat(lp), torch.cat(vs)
                dev = lp.device
                o, a = torch.cat([old_lp[i] for i in c]).to(dev), torch.cat([adv[i] for i in c]).to(dev)
                v0, g = torch.cat([old_v[i] for i in c]).to(dev), torch.cat([ret[i] for i in c]).to(dev)
                ratio = torch.exp(lp - o)
                pg = torch.max(-a * ratio, -a * ratio.clamp(1 - settings.clip_range, 1 + settings.clip_range)).mean()
                v_clip = v0 + (vs - v0).clamp(-settings.clip_range, settings.clip_range)
                vf = 0.5 * torch.max((vs - g) ** 2, (v_clip - g) ** 2).mean()
                loss = pg + settings.vf_coef * vf
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                steps += 1
                with torch.no_grad():
                    stats["policy_loss"].append(pg.item())
                    stats["value_loss"].append(vf.item())
                    stats["clipfrac"].append(((ratio - 1).abs() > settings.clip_range).float().mean().item())
                    stats["approx_kl"].append((0.5 * ((lp - o) ** 2).mean()).item())
                progress(10.0 + 85.0 * steps / total)
        model.eval()
        with torch.no_grad():
            new_lp = [
                x.cpu()
                for c in chunks
                for x in _forward(model, None, [seqs[i] for i in c], tokenizer.pad_token_id, False)[0]
            ]
        with atomic_dir(Path(out_dir)) as tmp:
            model.save_pretrained(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(tmp / VALUE_HEAD))
    finally:
        del model
        mem_after = free_memory()
    progress(100.0)
    kl_mean = sum(kl) / len(kl)
    kl_after = sum(float((n - r).sum()) for n, r in zip(new_lp, ref_lp)) / len(kl)
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    out.update(
        kl_coef=kl_coef,
        next_kl_coef=next_kl_coef(kl_coef, kl_mean, settings.target_kl),
        target_kl=settings.target_kl,
        kl_mean=kl_mean,
        kl_after=kl_after,
        steps=steps,
        reward_mean=sum(float(r["reward"]) for r in rollouts) / len(rollouts),
        logp_change=[float((n - o).sum()) for n, o in zip(new_lp, old_lp)],
        kl=kl,
        seconds=time.perf_counter() - t0,
        mem_after_release=mem_after,
    )
    if not all(math.isfinite(out[k]) for k in ("policy_loss", "value_loss", "kl_mean")):
        raise FloatingPointError(f"ppo: non-finite statistics {out}")
    log.info(
        "ppo: %d rollouts, %d steps, kl %.3f (coef %.3f -> %.3f), reward %.4f",
        len(rollouts),
        steps,
        kl_mean,
        kl_coef,
        out["next_kl_coef"],
        out["reward_mean"],
    )
    return out
