"""The shared loss: per-example weighted sum of pathway NLLs (summed or length-normalised), batch mean.

For RD-MLDG's MTCT with B examples: mean_i [ -log p(y_i | x_i, q_cls)
  + w * (1/T_i) sum_t -log p(r_it | r_i<t, x_i, q_reason) ].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def token_nll(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per-row summed NLL of the labelled tokens and their counts (labels -100 are ignored)."""
    import torch.nn.functional as F

    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != -100
    nll = F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]),
                          shifted_labels.clamp(min=0).reshape(-1), reduction="none").view(shifted_labels.shape)
    return (nll * mask).sum(dim=1), mask.sum(dim=1)


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
