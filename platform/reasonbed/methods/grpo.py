"""`grpo`: RL fine-tuning of the LoRA adapter with domain-knowledge rewards (GRPO, DeepSeekMath).

Per training image the policy samples G completions (vLLM actor with the current adapter, or
transformers); weighted rewards (reasonbed.rewards) are normalised within each group into
advantages; the loss is the clipped policy-ratio objective plus a k3 KL penalty towards the base
model (the adapter disabled). The step is `reasonbed.rl.step.GRPOStep`, run by the shared worker loop;
this module holds the options, validated on construction, and the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from reasonbed.compat.engines import default_engine, require_vllm
from reasonbed.config import ConfigError
from reasonbed.methods.base import Method
from reasonbed.prompts import prompt_for


@dataclass
class GRPOConfig:
    """Options of the `grpo` method (method_config.* in a TrainConfig)."""

    # Completions sampled per training image (the group); advantages are normalised within it, so >= 2.
    group_size: int = 4
    # Reward terms, by name in reasonbed.rewards.REWARDS (format, accuracy, hierarchy, consistency, length).
    rewards: list[str] = field(default_factory=lambda: ["format", "accuracy", "hierarchy"])
    # One weight per reward term, in the same order; the advantage uses the weighted sum.
    reward_weights: list[float] = field(default_factory=lambda: [0.2, 1.0, 0.5])
    # Weight beta of the per-token k3 KL estimate towards the reference policy (base model, adapter off).
    kl_weight: float = 0.04
    # Clip range epsilon of the policy ratio: the ratio is clipped to [1 - eps, 1 + eps].
    clip_epsilon: float = 0.2
    # Policy updates per rollout batch (mu); with 1 the old log-probs equal the current ones.
    iterations: int = 1
    # Divide group-centred rewards by the group's standard deviation (false: centre only, as in Dr. GRPO).
    scale_advantages: bool = True
    # Turn dropout (LoRA's included) off, so old, current and reference log-probs are exact (ratio 1 before a step).
    disable_dropout: bool = True
    # Rollout engine: a vLLM actor that loads the current adapter every step (default; hf where vLLM is not
    # installed), or transformers generate.
    engine: Literal["vllm", "hf"] = field(default_factory=default_engine)
    # Prompt: "direct" (answer with the option only) or "reasoning" (five tagged stages, then the option).
    prompt: Literal["direct", "reasoning"] = "reasoning"
    # Completion length limit in tokens (direct answers need about 8).
    max_tokens: int = 256
    # Sampling temperature of the rollouts (> 0: identical samples carry no advantage).
    temperature: float = 1.0
    # Nucleus sampling mass of the rollouts.
    top_p: float = 1.0
    # hierarchy reward: credit of a wrong answer inside the label's super-class.
    hierarchy_partial: float = 0.5
    # hierarchy reward: penalty for an answer outside the label set (naming no option, or several).
    outside_penalty: float = 1.0
    # length reward: tokens allowed before the penalty starts.
    length_budget: int = 200
    # consistency reward: the label-preserving transform giving the second view (hflip, crop, grayscale).
    consistency_transform: str = "hflip"
    # vLLM rollout actor: CPUs it reserves. Default (None): none in a run that trains in its own process
    # (scale.backend=local: rollouts and updates alternate, so the actor runs on the run's CPU), 1 on Ray Train
    # (beside the training workers, which keep theirs); reasonbed.rl.step.rollout_engine_config.
    rollout_cpus: float | None = None
    # vLLM rollout actor: GPUs it reserves (1 on a GPU cluster).
    rollout_gpus: float = 0.0
    # vLLM rollout actor: extra custom Ray resources on top of scale.engine_resources (which places every
    # engine actor of a run, e.g. {generation_node: 1} on the clusters of cluster/*.yaml).
    rollout_resources: dict[str, float] = field(default_factory=dict)
    # vLLM rollout actor: context length.
    rollout_max_model_len: int = 2048
    # vLLM rollout actor: extra vllm.LLM(...) keyword arguments (e.g. gpu_memory_utilization).
    rollout_engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # vLLM rollout actor: seconds to wait for it to be placed and to load the model before failing.
    rollout_start_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        from reasonbed.registry import RegistryError
        from reasonbed.rewards import REWARDS
        from reasonbed.rewards.transforms import TRANSFORMS

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"method_config.{name}: value {getattr(self, name)!r} {why}")

        require_vllm(self.engine, "method_config.engine")
        if not isinstance(self.group_size, int) or self.group_size < 2:
            raise bad("group_size", "must be an integer >= 2 (advantages are normalised within a group)")
        if not self.rewards:
            raise bad("rewards", f"must name at least one reward; known: {', '.join(REWARDS.names())}")
        for name in self.rewards:
            if name not in REWARDS:
                raise bad("rewards", f"names unknown reward {name!r}; known rewards: {', '.join(REWARDS.names())}")
        if len(set(self.rewards)) != len(self.rewards):
            raise bad("rewards", "names a reward twice")
        if len(self.reward_weights) != len(self.rewards):
            raise bad("reward_weights", f"has {len(self.reward_weights)} weights for {len(self.rewards)} rewards "
                                        f"{self.rewards}: give one weight per reward")
        if self.kl_weight < 0:
            raise bad("kl_weight", "must be >= 0")
        if not 0 < self.clip_epsilon < 1:
            raise bad("clip_epsilon", "must be in (0, 1)")
        if self.iterations < 1:
            raise bad("iterations", "must be >= 1")
        if self.max_tokens < 1:
            raise bad("max_tokens", "must be >= 1")
        if self.temperature <= 0:
            raise bad("temperature", "must be > 0 (GRPO needs different samples within a group)")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be in (0, 1]")
        if self.outside_penalty < 0:
            raise bad("outside_penalty", "must be >= 0 (it is subtracted)")
        if "length" in self.rewards and self.length_budget < 1:
            raise bad("length_budget", "must be >= 1 when the length reward is used")
        try:
            TRANSFORMS.get(self.consistency_transform)
        except RegistryError as error:
            raise bad("consistency_transform", f"is not known: {error}") from None
        if (self.rollout_cpus or 0.0) < 0 or self.rollout_gpus < 0 or self.rollout_max_model_len < 1 \
                or self.rollout_start_timeout_s <= 0:
            raise ConfigError(f"method_config: rollout_cpus ({self.rollout_cpus}) and rollout_gpus "
                              f"({self.rollout_gpus}) must be >= 0, rollout_max_model_len "
                              f"({self.rollout_max_model_len}) >= 1, rollout_start_timeout_s "
                              f"({self.rollout_start_timeout_s}) > 0")


class GRPOMethod(Method):
    """The `grpo` method: options and prompt; its worker step is reasonbed.rl.step.GRPOStep."""

    name = "grpo"
    config_class = GRPOConfig
    worker_step = "reasonbed.rl.step:GRPOStep"

    @classmethod
    def scored_prompt(cls, options: Any) -> str:
        """Evaluation uses the prompt the policy is trained on."""
        return options.prompt

    def prompt(self) -> str:
        """The user text of every rollout."""
        return prompt_for(self.options.prompt, self.class_names)

    def updates_per_step(self, cfg: Any) -> int:
        return self.options.iterations
