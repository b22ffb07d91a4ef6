"""The engine protocol, its request/result types, config and registry.

An engine turns a batch of (image, prompt text) requests into `n` completions each; a request may
carry in-context examples (images with the answers shown for them), which engines whose class sets
`multi_image = True` send as earlier chat turns (`check_multi_image` refuses the others). Each engine
class also says where its model's weights are (`weights`, read by `engine_weights` without building
it): "local" (it loads `engine.model`), "served" (an endpoint holds them) or "none"; and whether it follows
a training run's live policy (`follows_policy`: GRPO's rollout engine, which `check_standalone` refuses
everywhere else). Engines are
registered by dotted path in `ENGINES` and imported only when chosen, so vLLM or the OpenAI client
are imported only by runs that use them. `build_engine(cfg)` constructs one; `runs_async(cfg)` says
whether it has an async face for several batches at once (vLLM's async engine).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from reasonbed.compat.engines import default_engine, require_vllm
from reasonbed.config import ConfigError
from reasonbed.models.configs import ModelConfig
from reasonbed.models.families import get_family
from reasonbed.ray_runtime import check_custom_resources
from reasonbed.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    """How candidates are sampled."""

    n: int = 4  # candidates per image
    temperature: float = 0.8  # sampling temperature (0 = greedy)
    top_p: float = 0.95  # nucleus sampling mass
    max_tokens: int = 256  # completion length limit in tokens
    seed: int = 0  # sampling seed (per request: seed + row position)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"sampling.n: value {self.n!r} must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"sampling: temperature {self.temperature!r} must be >= 0 and top_p "
                              f"{self.top_p!r} in (0, 1]")
        if self.max_tokens < 1:
            raise ConfigError(f"sampling.max_tokens: value {self.max_tokens!r} must be >= 1")


@dataclass
class EngineConfig:
    """Which engine generates, with what model and resources."""

    # The engine (reasonbed.inference.base.ENGINES); default vllm, or hf where vLLM is not installed.
    name: Literal["template", "vllm", "hf", "openai", "vllm_actor"] = field(default_factory=default_engine)
    model: ModelConfig = field(default_factory=ModelConfig)  # the teacher (ignored by template)
    actors: int = 1  # engine actors in the Ray Data pool
    num_cpus: float = 1.0  # CPUs per actor
    num_gpus: float = 0.0  # GPUs per actor (tensor_parallel_size of them on a GPU cluster)
    tensor_parallel_size: int = 1  # vLLM tensor parallelism inside an actor
    batch_size: int = 8  # images per engine call
    vllm_async: bool = True  # vllm engines: vLLM's AsyncLLM, batches in flight share it (false: the offline vllm.LLM)
    batches_in_flight: int = 8  # async vllm: Ray Data batches one generation actor holds in its engine at once
    max_model_len: int = 2048  # vLLM context length
    images_per_prompt: int = 1  # most images in one prompt (vLLM limit_mm_per_prompt; in-context examples + 1)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # extra vllm.LLM(...) keyword arguments
    lora_path: str = ""  # optional LoRA adapter applied at generation: a directory or a URI (s3://, gs://)
    # Custom Ray resources each engine actor also requests, which pin engines to a node group:
    # {generation_node: 1} on the clusters of cluster/*.yaml; empty: any node with the CPUs/GPUs.
    resources: dict[str, float] = field(default_factory=dict)
    base_url: str = ""  # openai: the endpoint, e.g. http://host:8000/v1
    served_model: str = ""  # openai: model name on the server (default: model.path)
    api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key
    max_concurrency: int = 8  # openai: requests in flight per actor
    timeout_s: float = 120.0  # openai: per-request timeout
    max_retries: int = 5  # openai: retries on 429/5xx/timeouts, with exponential backoff
    template_noise: float = 0.0  # template: fraction of candidates made wrong (exercises rejection)

    def __post_init__(self) -> None:
        require_vllm(self.name, "engine.name")
        if self.images_per_prompt < 1:
            raise ConfigError(f"engine.images_per_prompt: value {self.images_per_prompt!r} must be >= 1")
        if self.actors < 1 or self.batch_size < 1 or self.tensor_parallel_size < 1 or self.batches_in_flight < 1:
            raise ConfigError(f"engine: actors ({self.actors}), batch_size ({self.batch_size}), tensor_parallel_size "
                              f"({self.tensor_parallel_size}) and batches_in_flight ({self.batches_in_flight}) "
                              "must be >= 1")
        if self.name == "openai" and not self.base_url:
            raise ConfigError("engine.base_url is required for engine 'openai' (e.g. http://host:8000/v1)")
        check_custom_resources("engine.resources", self.resources)
        if not 0.0 <= self.template_noise <= 1.0:
            raise ConfigError(f"engine.template_noise: value {self.template_noise!r} must be in [0, 1]")


    def actor_options(self) -> dict[str, Any]:
        """Ray options of one engine actor (Ray Data `map_batches` or `ray.remote`): CPUs, GPUs, node group."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus or None}
        if self.resources:
            options["resources"] = dict(self.resources)
        return options


@dataclass
class Example:
    """One in-context example: an image, the user text shown with it and the answer given to it."""

    image: Any  # PIL.Image
    prompt: str
    answer: str


@dataclass
class Request:
    """One image and the user text to send with it; `meta` carries row fields (path, label, ...).

    `examples` (in-context examples) go before it as earlier user/assistant turns, in order.
    """

    image: Any  # PIL.Image
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)

    @property
    def images(self) -> list[Any]:
        """Every image of the prompt in order: the examples' first, then the query's."""
        return [example.image for example in self.examples] + [self.image]

    @property
    def turns(self) -> list[tuple[str, str]]:
        """The examples as (user text, answer) pairs, for `build_chat_prompt(examples=...)`."""
        return [(example.prompt, example.answer) for example in self.examples]


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)  # the sampled ids (GRPO scores exactly these)
    truncated: bool = False  # cut by the token budget (max_tokens) before the model ended it


class Engine(Protocol):
    """What every engine provides. Rollout engines (GRPO) also follow the live policy with `sync`.

    An engine that can hold several batches at once also has an async face, `async agenerate(requests,
    sampling)` (same result as `generate`), and a static `runs_async(cfg)` saying whether `cfg` uses it:
    the generation pipeline then keeps `engine.batches_in_flight` batches in each actor's engine.
    """

    model_id: str
    weights: ClassVar[Literal["local", "served", "none"]]  # see `engine_weights`
    multi_image: ClassVar[bool]  # several images per prompt (in-context examples): see `check_multi_image`
    follows_policy: ClassVar[bool]  # built from a training run's live model (GRPO's rollouts): see `check_standalone`

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        """`sampling.n` completions per request, in request order."""
        ...

    def sync(self, model: Any) -> None:
        """Sample from `model`'s current LoRA adapter from now on (engines that hold their own weights)."""
        ...

    def close(self) -> None:
        """Free the engine's resources."""
        ...


ENGINES: Registry[Any] = Registry("engine")
ENGINES.add("template", "reasonbed.inference.template:TemplateEngine")
ENGINES.add("vllm", "reasonbed.inference.vllm_engine:VLLMEngine")
ENGINES.add("hf", "reasonbed.inference.hf_engine:HFEngine")
ENGINES.add("openai", "reasonbed.inference.openai_engine:OpenAIEngine")
# A vLLM engine in a Ray actor of its own that follows a training process's adapter (GRPO rollouts).
ENGINES.add("vllm_actor", "reasonbed.inference.vllm_actor:VLLMActorEngine")


def engine_weights(engine: str) -> Literal["local", "served", "none"]:
    """Where the weights of the model engine `engine` answers with are, from its class (imports its module, builds
    nothing): "local" - it loads `engine.model` in its own process (the path must resolve; its features can be
    probed), "served" - an endpoint holds them (`engine.base_url`: nothing local to resolve), "none" - no model
    (the template teacher writes chains from the images' metadata: it cannot predict)."""
    return ENGINES.get(engine).weights


def warn_served_image_bounds(engine: str, model: ModelConfig) -> None:
    """With a served model (engine `engine`), its server decides the image sizes: when `model` has image bounds,
    name the vLLM server flag that applies them (the family's own kwargs, when the family is known)."""
    bounds = model.pixel_bounds()
    if engine_weights(engine) != "served" or not bounds:
        return
    flag = get_family(model.family).vllm_mm_processor_kwargs(model) if model.family else bounds
    log.warning("the served model's server decides its image sizes: start vLLM's server with "
                "--mm-processor-kwargs '%s' to apply %s as training did", json.dumps(flag),
                ", ".join(f"model.{key}={value}" for key, value in bounds.items()))


def check_standalone(engine: str) -> None:
    """Raise `ConfigError` when engine `engine` cannot run from its config alone: it samples a training run's live
    policy (GRPO's rollouts build it from their model), so generation, evaluation and prediction refuse it."""
    if ENGINES.get(engine).follows_policy:
        raise ConfigError(f"engine.name: engine {engine!r} samples a training run's live policy (GRPO's rollouts) "
                          f"and cannot run on its own; engines that can: {_engines_where('follows_policy', False)}")


def check_multi_image(engine: str, images: int) -> None:
    """Raise `ConfigError` naming the engine when it cannot put `images` (> 1) images in one prompt."""
    if images > 1 and not ENGINES.get(engine).multi_image:
        raise ConfigError(f"engine.name: engine {engine!r} does not support several images per prompt "
                          f"({images} asked: in-context examples + the query); engines that do: "
                          f"{_engines_where('multi_image', True)}")


def _engines_where(fact: str, value: bool) -> str:
    """The registered engines whose class fact `fact` is `value`, for error messages."""
    return ", ".join(name for name in ENGINES.names() if getattr(ENGINES.get(name), fact) == value)


def engine_secrets(cfg: EngineConfig) -> dict[str, str]:
    """The openai engine's API key from this (driver) process's environment, to hand to engine actors as a
    constructor argument - never through runtime_env, which the Ray dashboard shows."""
    import os

    if cfg.name == "openai" and os.environ.get(cfg.api_key_env):
        return {cfg.api_key_env: os.environ[cfg.api_key_env]}
    return {}


def runs_async(cfg: EngineConfig) -> bool:
    """Whether the engine `cfg` names serves several batches at once through `agenerate` (see `Engine`)."""
    check = getattr(ENGINES.get(cfg.name), "runs_async", None)
    return bool(check(cfg)) if check is not None else False


def build_engine(cfg: EngineConfig, **context: Any) -> Engine:
    """Construct the engine named by `cfg.name` (imports its module now)."""
    return ENGINES.get(cfg.name)(cfg, **context)
