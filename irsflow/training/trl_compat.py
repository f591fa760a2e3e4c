"""Where TRL's Triton kernels cannot run (CPU wheels of torch ship without Triton), the same
quantities computed with plain torch ops, so DPO/KTO/GRPO train on CPU too.

TRL 1.15's preference trainers always project the LM head through ``ChunkedLogProbFunction``
(a Triton kernel that avoids materialising [tokens, vocab] logits); without Triton that symbol is
None and training fails. ``install()`` puts in a drop-in with the same call signature and outputs
(per-token log-probs and the optional entropy, log-sum of squared probs, mean logit, top-1 hit).
It materialises the logits, which is fine at the sizes CPU training can handle; on CUDA with
Triton nothing is replaced.
"""

from __future__ import annotations

OPTIONAL = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


class PlainLogProb:
    @staticmethod
    def apply(
        hidden,
        weight,
        bias,
        targets,
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs=OPTIONAL,
    ):
        import torch
        import torch.nn.functional as F

        y = F.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping is not None:  # the kernel's 2*sigmoid(2y/c)-1 == tanh(y/c)
            y = final_logit_softcapping * torch.tanh(y / final_logit_softcapping)
        z = y / temperature
        logp = z.log_softmax(-1)
        lp = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
        lssp = torch.logsumexp(2 * logp, -1) if "log_sum_sq_probs" in outputs else None
        mean = z.mean(-1) if "mean_logits" in outputs else None
        top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
        return lp, entropy, lssp, mean, top1


def install() -> bool:
    """Replace TRL's missing kernel; returns True when the fallback is in use."""
    import trl.trainer.utils as u

    if getattr(u, "_ChunkedLogProbFunction", object) is None:
        u._ChunkedLogProbFunction = PlainLogProb
    return u._ChunkedLogProbFunction is PlainLogProb
