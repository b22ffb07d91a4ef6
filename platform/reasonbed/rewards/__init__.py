"""Rewards for RL fine-tuning: plain callables `(completions, labels, **context) -> list[float]`.

The built-in rewards (format, accuracy, hierarchy, consistency, length) are registered here by dotted
path; `score()` combines any registered rewards by weights. See reasonbed.rewards.builtin for their
definitions and reasonbed.rewards.base for the context keys.
"""

from reasonbed.rewards.base import CONTEXT_KEYS, REWARDS, RewardFn, RewardScores, check_weights, score

REWARDS.add("format", "reasonbed.rewards.builtin:format_reward")
REWARDS.add("accuracy", "reasonbed.rewards.builtin:accuracy_reward")
REWARDS.add("hierarchy", "reasonbed.rewards.builtin:hierarchy_reward")
REWARDS.add("consistency", "reasonbed.rewards.builtin:consistency_reward")
REWARDS.add("length", "reasonbed.rewards.builtin:length_reward")


def super_classes_of(spec) -> list[str | None]:  # noqa: ANN001 - a reasonbed.data.specs.DatasetSpec
    """Per class index of `spec`, its super-class in the spec's hierarchy (None when ungrouped)."""
    return [spec.super_class(name) for name in spec.classes]


__all__ = ["CONTEXT_KEYS", "REWARDS", "RewardFn", "RewardScores", "check_weights", "score", "super_classes_of"]
