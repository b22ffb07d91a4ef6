"""The OOD evaluation job's config: models to compare, data, conditions, shots, prompts, probe, output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reasonbed.config import ConfigError
from reasonbed.data.catalog import DataConfig
from reasonbed.inference.base import EngineConfig, check_multi_image, check_standalone
from reasonbed.models.configs import ModelConfig
from reasonbed.prompts import PROMPT_KINDS
from reasonbed.tracking import TrackingConfig

# In-context conditions (k > 0 examples each) and the k = 0 domain-knowledge prompt; the plain
# zero-shot prompt (k = 0, no knowledge) is always evaluated: it is every condition's k = 0 point.
ICL_CONDITIONS = ("target", "domain_shift", "label_shift", "spurious")
CONDITIONS = (*ICL_CONDITIONS, "knowledge")
ZERO_SHOT = "zero_shot"


@dataclass
class EvalModel:
    """One model of the comparison: a base model, optionally with a LoRA adapter."""

    name: str = ""  # label in the report (default: the model's folder or id, plus the adapter's run name)
    model: ModelConfig = field(default_factory=ModelConfig)  # the base model (empty path: the tiny factory model)
    adapter: str = ""  # LoRA adapter directory, or a training run directory holding adapter/ ("" = none)


@dataclass
class ProbeConfig:
    """The linear-probe diagnosis: logistic regression on the model's own pooled features."""

    enabled: bool = True  # extract features and fit the probes
    # Features to probe: vision = mean of the projected vision-tower tokens; answer = the language model's
    # last hidden state at the answer position of the direct prompt.
    features: list[Literal["vision", "answer"]] = field(default_factory=lambda: ["vision", "answer"])
    batch_size: int = 16  # images per feature-extraction forward pass
    max_images_per_domain: int = 0  # class-balanced seeded subset per domain (0 = every image)
    c: float = 1.0  # inverse L2 regularisation strength of the logistic regression
    max_iter: int = 2000  # solver iterations of the logistic regression

    def __post_init__(self) -> None:
        if not self.features or len(set(self.features)) != len(self.features):
            raise ConfigError(f"probe.features: value {self.features!r} must name vision and/or answer once each")
        if self.batch_size < 1 or self.max_images_per_domain < 0 or self.c <= 0 or self.max_iter < 1:
            raise ConfigError(f"probe: batch_size ({self.batch_size}) and max_iter ({self.max_iter}) must be >= 1, "
                              f"max_images_per_domain ({self.max_images_per_domain}) >= 0, c ({self.c}) > 0")


@dataclass
class EvalConfig:
    """Out-of-distribution evaluation of one dataset's domains for several models (docs/evaluation.md)."""

    data: DataConfig = field(default_factory=DataConfig)  # the dataset (one per run)
    models: list[EvalModel] = field(default_factory=lambda: [EvalModel()])  # compared side by side
    # Engine settings (vllm, hf or openai); its model, lora_path and images_per_prompt are set per model
    # from `models` and `shots`.
    engine: EngineConfig = field(default_factory=EngineConfig)
    domains: list[str] = field(default_factory=list)  # query domains (empty = all of the dataset's)
    # Conditions, of target, domain_shift, label_shift, spurious, knowledge (zero-shot is always run).
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    shots: list[int] = field(default_factory=lambda: [0, 2, 4, 8])  # in-context examples per query (k)
    prompts: list[str] = field(default_factory=lambda: list(PROMPT_KINDS))  # direct and/or reasoning
    queries_per_domain: int = 0  # class-balanced seeded subset of query images per domain (0 = every image)
    seed: int = 0  # seed of the query subsets, the examples, the label permutation and the nuisance mapping
    max_tokens_direct: int = 16  # completion limit for the direct prompt
    max_tokens_reasoning: int = 256  # completion limit for the reasoning prompt
    probe: ProbeConfig = field(default_factory=ProbeConfig)  # the linear-probe diagnosis
    output: str = ""  # directory or s3:// URL for the report, the predictions shards and the probe results
    shard_size: int = 64  # queries per predictions shard (the unit of resume)
    ray_address: str = ""  # join this Ray cluster (empty: RAY_ADDRESS or a local Ray)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow / W&B logging of the report

    def __post_init__(self) -> None:
        check_standalone(self.engine.name)
        unknown = [name for name in self.conditions if name not in CONDITIONS]
        if unknown:
            raise ConfigError(f"conditions: value {unknown[0]!r} is not allowed; allowed: {', '.join(CONDITIONS)}")
        bad_prompts = [name for name in self.prompts if name not in PROMPT_KINDS]
        if bad_prompts or not self.prompts:
            raise ConfigError(f"prompts: value {self.prompts!r} must name direct and/or reasoning")
        if any(k < 0 for k in self.shots) or len(set(self.shots)) != len(self.shots) or not self.shots:
            raise ConfigError(f"shots: value {self.shots!r} must be distinct integers >= 0")
        self.shots = sorted(self.shots)
        if not self.models:
            raise ConfigError("models: at least one model is required")
        if self.queries_per_domain < 0 or self.shard_size < 1:
            raise ConfigError(f"queries_per_domain ({self.queries_per_domain}) must be >= 0 and shard_size "
                              f"({self.shard_size}) >= 1")
        if self.max_tokens_direct < 1 or self.max_tokens_reasoning < 1:
            raise ConfigError("max_tokens_direct and max_tokens_reasoning must be >= 1")
        check_multi_image(self.engine.name, self.images_per_prompt)

    @property
    def icl_conditions(self) -> list[str]:
        return [name for name in self.conditions if name in ICL_CONDITIONS]

    @property
    def icl_shots(self) -> list[int]:
        return [k for k in self.shots if k > 0]

    @property
    def images_per_prompt(self) -> int:
        """The most images one prompt holds: the largest k with an in-context condition, plus the query."""
        return 1 + (max(self.icl_shots) if self.icl_shots and self.icl_conditions else 0)
