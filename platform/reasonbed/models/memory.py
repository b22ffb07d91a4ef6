"""A memory estimate of LoRA training per worker: weights, adapters, optimizer state and activations.

`estimate_training_memory(model_cfg, lora_cfg, micro_batch)` reads the checkpoint's config.json (local
or already in the Hugging Face cache; None when it is not readable without the network), builds the
model on PyTorch's meta device (no memory, no weights read) to count its parameters exactly and the
LoRA parameters its target modules get, and estimates, for the chosen dtype:
- weights: every parameter in the weights dtype (each DDP worker holds a full copy);
- LoRA: adapter parameters and their gradients, in float32 (peft keeps adapters in float32);
- optimizer: AdamW's two float32 moments per adapter parameter;
- activations of one micro-batch: per transformer layer of both towers, ~34 x tokens x hidden bytes at
  16 bits (Korthikanti et al. 2022, attention scores not stored: SDPA/flash), only the layer inputs
  plus one layer when gradient checkpointing is on; plus the float32 logits and their log-softmax.
Sequence lengths are assumptions (`image_tokens`, `text_tokens`, printed with the estimate): a real
PACS image at <= 200704 pixels is at most 256 visual tokens; a five-stage chain is ~300-500 tokens.
It is an estimate, not a measurement: allocator fragmentation, CUDA context (~0.5-1 GB) and the
evaluation's generation cache come on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reasonbed.models.configs import LoraConfig, ModelConfig, checkpoint_config
from reasonbed.models.families import get_family

GB = 1024**3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ACTIVATION_FACTOR = 34  # bytes per token per hidden unit of one layer at 16 bits (no attention scores)
IMAGE_TOKENS = 256  # visual tokens per image assumed when the config does not bound them
TEXT_TOKENS = 512  # prompt + target tokens assumed (a five-stage reasoning chain)


@dataclass
class MemoryEstimate:
    """Bytes per training worker, with the assumptions they rest on."""

    model: str
    family: str
    dtype: str
    parameters: int
    lora_parameters: int
    micro_batch: int
    tokens: int  # per example: image + text
    gradient_checkpointing: bool
    weights: int
    lora: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.optimizer + self.activations

    def summary(self) -> str:
        def gb(value: int) -> str:
            return f"{value / GB:.1f} GB"

        return (f"memory estimate per training worker for {self.model} ({self.family}, {self.parameters / 1e9:.2f}B "
                f"parameters, {self.dtype}): weights {gb(self.weights)}, LoRA {self.lora_parameters / 1e6:.1f}M "
                f"parameters + gradients {gb(self.lora)}, AdamW state {gb(self.optimizer)}, activations "
                f"{gb(self.activations)} (micro-batch {self.micro_batch} x {self.tokens} tokens, gradient "
                f"checkpointing {'on' if self.gradient_checkpointing else 'off'}); total ~{gb(self.total)} "
                f"plus CUDA context and allocator slack")


def _get(config: Any, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return default


def _meta_model(model_cfg: ModelConfig, config_dict: dict[str, Any]) -> Any:
    import torch

    family = get_family(model_cfg.family)
    config = family.config_class.from_dict(config_dict)
    with torch.device("meta"):
        return family.model_class._from_config(config), config


def image_tokens(model_cfg: ModelConfig, config: Any) -> int:
    """Visual tokens per image: from max_image_pixels (Qwen: one token per 28x28 pixels), or InternVL's
    per-tile count, else IMAGE_TOKENS."""
    if model_cfg.max_image_pixels and model_cfg.family.startswith("qwen"):
        return max(1, model_cfg.max_image_pixels // (28 * 28))
    return _get(config, "image_seq_length", default=IMAGE_TOKENS) or IMAGE_TOKENS


def estimate_training_memory(model_cfg: ModelConfig, lora_cfg: LoraConfig, micro_batch: int,
                             text_tokens: int = TEXT_TOKENS, dtype: str | None = None,
                             gradient_checkpointing: bool | None = None) -> MemoryEstimate | None:
    """The estimate for `model_cfg` (family known), or None when its config.json is not readable offline.

    `dtype` defaults to the weights dtype auto resolves to here; `gradient_checkpointing` to what
    `model_cfg.gradient_checkpointing` decides for the model's size.
    """
    from reasonbed.models.loading import GRADIENT_CHECKPOINTING_MIN_PARAMETERS, weights_dtype

    config_dict = checkpoint_config(model_cfg.path) if model_cfg.path else None
    if config_dict is None or not model_cfg.family:
        return None
    model, config = _meta_model(model_cfg, config_dict)
    family = get_family(model_cfg.family)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    pattern = re.compile(family.lora_target_regex(lora_cfg.vision_targets, lora_cfg.language_targets,
                                                  lora_cfg.apply_to_vision))
    lora = sum(lora_cfg.r * (module.in_features + module.out_features) for name, module in model.named_modules()
               if hasattr(module, "in_features") and hasattr(module, "out_features") and pattern.fullmatch(name))
    dtype = dtype or weights_dtype(model_cfg.dtype)
    if gradient_checkpointing is None:
        setting = model_cfg.gradient_checkpointing
        gradient_checkpointing = setting == "on" or (setting == "auto"
                                                     and parameters > GRADIENT_CHECKPOINTING_MIN_PARAMETERS)
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    visual = image_tokens(model_cfg, config)
    tokens = visual + text_tokens
    towers = [(tokens, _get(text, "hidden_size"), _get(text, "num_hidden_layers"))]
    if vision is not None:  # the encoder sees patches before the 2x2 merge / pixel shuffle: 4 per token
        towers.append((4 * visual, _get(vision, "hidden_size", "embed_dim"), _get(vision, "depth", "num_hidden_layers")))
    width = BYTES.get(dtype, 4)
    activations = 0
    for length, hidden, layers in towers:
        one_layer = ACTIVATION_FACTOR * micro_batch * length * hidden * width // 2
        activations += (layers * micro_batch * length * hidden * width + one_layer) if gradient_checkpointing \
            else layers * one_layer
    activations += 2 * 4 * micro_batch * tokens * _get(text, "vocab_size")  # float32 logits + log-softmax
    return MemoryEstimate(model=model_cfg.path, family=model_cfg.family, dtype=dtype, parameters=parameters,
                          lora_parameters=lora, micro_batch=micro_batch, tokens=tokens,
                          gradient_checkpointing=gradient_checkpointing, weights=parameters * width,
                          lora=lora * 8, optimizer=lora * 8, activations=activations)
