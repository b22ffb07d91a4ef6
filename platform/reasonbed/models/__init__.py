"""Models: model families, LoRA in both towers, and the offline tiny-model factory.

Public entry points (heavy libraries are imported only when these are called):
`ModelConfig`, `LoraConfig`, `FAMILIES`, `get_family`, `resolve_model_path`,
`load_model_and_processor`, `build_chat_prompt`, `apply_lora`, `trainable_parameter_counts`,
`build_tiny_model`.
"""

from reasonbed.models.configs import LoraConfig, ModelConfig
from reasonbed.models.encoding import build_chat_prompt
from reasonbed.models.families import FAMILIES, ModelFamily, get_family
from reasonbed.models.loading import (
    load_model_and_processor,
    load_processor,
    resolve_model_path,
)
from reasonbed.models.lora import apply_lora, trainable_parameter_counts
from reasonbed.models.tiny import build_tiny_model, count_parameters

__all__ = [
    "FAMILIES",
    "LoraConfig",
    "ModelConfig",
    "ModelFamily",
    "apply_lora",
    "build_chat_prompt",
    "build_tiny_model",
    "count_parameters",
    "get_family",
    "load_model_and_processor",
    "load_processor",
    "resolve_model_path",
    "trainable_parameter_counts",
]
