"""The reward registry and the weighted combination of reward terms.

A reward is a plain callable `(completions, labels, **context) -> list[float]`: one float per
completion. `completions` are the generated texts, `labels` the true class indices (into
`context["class_names"]`). Each reward reads the context keys it needs and ignores the rest; the keys
the GRPO loop passes are listed in `CONTEXT_KEYS`. `score(names, weights, ...)` evaluates the named
rewards and returns every term separately (for logging) and their weighted sum (for the advantages).
Register a new reward with `@REWARDS.register("name")` or a lazy `REWARDS.add("name", "module:attr")`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonbed.registry import Registry

RewardFn = Callable[..., list[float]]
REWARDS: Registry[RewardFn] = Registry("reward")

# What the GRPO loop puts in the context of every reward call.
CONTEXT_KEYS = {
    "class_names": "the options, in label order (display names)",
    "prompt_kind": "'direct' (answer with the option only) or 'reasoning' (five tagged stages)",
    "super_classes": "per class index, its super-class name or None (from the dataset spec's hierarchy)",
    "completion_tokens": "per completion, its length in tokens",
    "view_completions": "per completion, the completions for a label-preserving transform of its image",
    "hierarchy_partial": "credit of a wrong answer inside the label's super-class",
    "outside_penalty": "penalty (subtracted) for an answer outside the label set",
    "length_budget": "tokens allowed before the length penalty starts",
}


@dataclass
class RewardScores:
    """Per-completion rewards: every term by name and their weighted total."""

    total: list[float]
    terms: dict[str, list[float]] = field(default_factory=dict)

    def means(self, prefix: str = "reward/") -> dict[str, float]:
        """`reward/<term>` and `reward/total` averaged over the completions."""
        count = max(1, len(self.total))
        means = {f"{prefix}{name}": sum(values) / count for name, values in self.terms.items()}
        means[f"{prefix}total"] = sum(self.total) / count
        return means


def check_weights(names: Sequence[str], weights: Sequence[float]) -> None:
    """Raise ValueError unless there is one finite weight per reward name and every name is known."""
    if len(names) != len(weights):
        raise ValueError(f"{len(weights)} reward weights {list(weights)} for {len(names)} rewards {list(names)}: "
                         "give one weight per reward")
    if not names:
        raise ValueError("no reward named: give at least one (known rewards: " + ", ".join(REWARDS.names()) + ")")
    for name, weight in zip(names, weights, strict=True):
        REWARDS.get(name)  # RegistryError naming the known rewards
        if not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"reward weight {weight!r} of {name!r} is not a finite number")


def score(names: Sequence[str], weights: Sequence[float], completions: Sequence[str | None],
          labels: Sequence[int], **context: Any) -> RewardScores:
    """Evaluate each named reward and combine them: total_i = sum_k weight_k * reward_k(i)."""
    check_weights(names, weights)
    if len(completions) != len(labels):
        raise ValueError(f"{len(completions)} completions but {len(labels)} labels")
    terms: dict[str, list[float]] = {}
    total = [0.0] * len(completions)
    for name, weight in zip(names, weights, strict=True):
        values = [float(value) for value in REWARDS.get(name)(completions, labels, **context)]
        if len(values) != len(completions):
            raise ValueError(f"reward {name!r} returned {len(values)} values for {len(completions)} completions")
        terms[name] = values
        total = [running + weight * value for running, value in zip(total, values, strict=True)]
    return RewardScores(total=total, terms=terms)
