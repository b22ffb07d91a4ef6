"""GRPO's arithmetic: group-normalised advantages and the clipped loss with k3 KL.

For a prompt with G completions o_1..o_G and rewards r_1..r_G (Shao et al. 2024, DeepSeekMath):
  A_i = (r_i - mean(r)) / (std(r) + eps)        (std: the unbiased sample std, as TRL computes it)
and, per completion token t with ratio rho_t = pi(o_t) / pi_old(o_t) and d_t = log pi_ref - log pi,
  loss_t = -( min(rho_t A_i, clip(rho_t, 1 - e, 1 + e) A_i) - beta (exp(d_t) - d_t - 1) ),
averaged over each completion's tokens, then over completions. A token is "clipped" when the clipped
term is the active one: rho_t < 1 - e with A_i < 0, or rho_t > 1 + e with A_i > 0.
Hand-written (TRL's GRPOTrainer is a transformers Trainer, which does not fit a Ray Train loop);
tests/test_grpo.py checks it against numbers computed by hand. Token log-probs come from the shared
`reasonbed.train.losses.token_logps`.
"""

from __future__ import annotations

from typing import Any


def group_advantages(rewards: Any, group_size: int, scale: bool = True, eps: float = 1e-4) -> Any:
    """Advantages of consecutive groups of `group_size` rewards (a 1-D tensor, prompt-major)."""
    import torch

    if group_size < 2:
        raise ValueError(f"group_size {group_size} < 2: advantages need at least two completions per prompt")
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"{tuple(rewards.shape)} rewards do not form groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def grpo_loss(logps: Any, old_logps: Any, ref_logps: Any | None, advantages: Any, mask: Any,
              clip_epsilon: float, kl_weight: float) -> tuple[Any, dict[str, float]]:
    """The GRPO loss over a batch of completions and its statistics (kl, clip_fraction, ratio_mean).

    logps/old_logps/ref_logps/mask: [B, T] over completion tokens (mask 1 where a token counts);
    advantages: [B]. `ref_logps` may be None when kl_weight is 0.
    """
    import torch

    mask = mask.to(logps.dtype)
    advantages = advantages.to(logps.dtype).unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped_ratio = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
    objective = torch.minimum(ratio * advantages, clipped_ratio * advantages)
    if ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
    else:
        kl = torch.zeros_like(logps)
    per_token = -(objective - kl_weight * kl)
    counts = mask.sum(dim=1).clamp(min=1)
    loss = ((per_token * mask).sum(dim=1) / counts).mean()
    with torch.no_grad():
        clipped = ((ratio < 1 - clip_epsilon) & (advantages < 0)) | ((ratio > 1 + clip_epsilon) & (advantages > 0))
        tokens = mask.sum().clamp(min=1)
        stats = {
            "kl": float(((kl * mask).sum(dim=1) / counts).mean()),
            "clip_fraction": float((clipped.to(mask.dtype) * mask).sum() / tokens),
            "ratio_mean": float((ratio * mask).sum() / tokens),
        }
    return loss, stats
