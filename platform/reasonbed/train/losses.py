"""Token log-probabilities (the one function both supervised training and GRPO use) and the supervised loss.

`token_logps(logits, labels)` gives log p of every labelled next token and the mask of labelled
positions. The supervised loss is, per example, the weighted sum of its pathways' NLLs (summed, or
length-normalised), averaged over the batch; for RD-MLDG's MTCT with B examples:
  mean_i [ -log p(y_i | x_i, q_cls) + w * (1/T_i) sum_t -log p(r_it | r_i<t, x_i, q_reason) ].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def token_logps(logits: Any, labels: Any) -> tuple[Any, Any]:
    """log p of each labelled next token (0 elsewhere) and the mask of labelled positions, both [B, T-1]."""
    import torch.nn.functional as F

    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != -100
    logps = -F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]),
                             shifted_labels.clamp(min=0).reshape(-1), reduction="none").view(shifted_labels.shape)
    return logps * mask, mask


def token_nll(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per-row summed NLL of the labelled tokens and their counts."""
    logps, mask = token_logps(logits, labels)
    return -logps.sum(dim=1), mask.sum(dim=1)


def pathway_loss(nll_sum: Any, counts: Any, weights: Sequence[float], normalise: Sequence[bool],
                 example_of_row: Sequence[int], num_examples: int) -> Any:
    """Combine per-row NLLs into the batch loss: rows are pathways, grouped by example."""
    import torch

    per_row = torch.stack([
        weights[i] * (nll_sum[i] / counts[i].clamp(min=1) if normalise[i] else nll_sum[i])
        for i in range(len(weights))
    ])
    per_example = torch.zeros(num_examples, dtype=per_row.dtype, device=per_row.device)
    per_example = per_example.index_add(0, torch.tensor(list(example_of_row), device=per_row.device), per_row)
    return per_example.mean()
