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


__all__ = ["CONTEXT_KEYS", "REWARDS", "RewardFn", "RewardScores", "check_weights", "score"]
