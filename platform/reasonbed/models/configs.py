"""Config dataclasses of the models part: which model to load (`ModelConfig`) and how to adapt it
with LoRA (`LoraConfig`). Both are filled by `reasonbed.config.load` from YAML and `key=value`
overrides, and validate themselves in `__post_init__`, raising `ConfigError` naming field and value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reasonbed.config import ConfigError
from reasonbed.models.families import FAMILIES, family_for_model_type

DTYPES = ("float32", "bfloat16", "float16", "auto")
TINY_SIZES = ("tiny", "small")
TINY_FAMILY = "qwen2_vl"  # the family of the offline tiny model when neither path nor family is given


def checkpoint_config(path: str) -> dict[str, Any] | None:
    """A checkpoint's config.json when readable without the network: a local directory, or a hub id
    already in the Hugging Face cache (HF_HOME); None otherwise (read at load time instead)."""
    local = Path(path).expanduser()
    found: Any = local / "config.json" if local.is_dir() else None
    if found is None and path.count("/") == 1 and not path.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(path, "config.json")
            found = Path(cached) if isinstance(cached, str) else None
        except (ImportError, ValueError):  # not a valid repo id
            found = None
    if found is None or not found.is_file():
        return None
    try:
        return json.loads(found.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.path: cannot read {str(found)!r}: {error}") from error


IMAGE_BOUNDS = ("min_image_pixels", "max_image_pixels")  # ModelConfig's image size bounds (Qwen families)


@dataclass
class ModelConfig:
    """Which multimodal LLM to load, and how."""

    # Model family (architecture), one of reasonbed.models.families.FAMILIES (qwen2_vl, qwen2_5_vl, internvl3);
    # "" = detected from the checkpoint's config.json (model_type); the tiny model is qwen2_vl. A family that
    # contradicts the checkpoint's model_type is an error naming both.
    family: str = ""
    # Hugging Face hub id or local directory; "" means the offline tiny model built by the factory (offline
    # benchmarks and smoke tests only: a real dataset needs a path).
    path: str = ""
    # Let transformers run modelling code shipped with the checkpoint (only for trusted models).
    trust_remote_code: bool = False
    # Weights dtype, for training and for vLLM: auto (bfloat16 on a GPU that supports it, float32 on CPU),
    # float32, bfloat16 or float16.
    dtype: str = "auto"
    # Recompute activations in the backward pass, in both towers (less memory, ~30% more compute):
    # auto = on for models above 1B parameters, on, off (YAML's unquoted on/off/true/false are read as on/off).
    gradient_checkpointing: Literal["auto", "on", "off"] | bool = "auto"
    # Lower bound on an image's pixel count after resizing (0 = the processor's own setting);
    # Qwen families only (InternVL tiles images at a fixed size).
    min_image_pixels: int = 0
    # Upper bound on an image's pixel count after resizing (0 = the processor's own setting);
    # Qwen families only.
    max_image_pixels: int = 0
    # Size of the factory's tiny model when path is "": tiny (<1M params) or small (20-60M).
    tiny_size: str = "tiny"
    # Seed of the factory's tiny model when path is "" (initialisation and pretraining corpus).
    tiny_seed: int = 0
    # Pretrain the factory's tiny model (size tiny) on the generated image-text corpus before use
    # (reasonbed.models.pretrain); false: the randomly initialised model. The small size is never pretrained.
    tiny_pretrained: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.gradient_checkpointing, bool):
            self.gradient_checkpointing = "on" if self.gradient_checkpointing else "off"
        if self.family and self.family not in FAMILIES:
            raise ConfigError(
                f"model.family: value {self.family!r} is not a known model family; "
                f"known: {', '.join(FAMILIES.names())} (or \"\" to detect it from the checkpoint)"
            )
        if not self.path:
            self.family = self.family or TINY_FAMILY
        else:
            config = checkpoint_config(self.path)
            if config is not None:
                self.family = checked_family(self.family, config, self.path)
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype: value {self.dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
        if self.tiny_size not in TINY_SIZES:
            raise ConfigError(
                f"model.tiny_size: value {self.tiny_size!r} is not allowed; allowed: {', '.join(TINY_SIZES)}"
            )
        for name in (*IMAGE_BOUNDS, "tiny_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}: value {getattr(self, name)!r} must be >= 0")
        if self.pixel_bounds() and self.family and not FAMILIES.get(self.family).image_bounds:
            bounds = next(iter(self.pixel_bounds()))
            resizing = ", ".join(name for name in FAMILIES.names() if FAMILIES.get(name).image_bounds)
            raise ConfigError(f"model.{bounds}: the {self.family} family does not resize images to a pixel budget; "
                              f"these bounds apply to {resizing}")
        if self.min_image_pixels and self.max_image_pixels and self.min_image_pixels > self.max_image_pixels:
            raise ConfigError(
                f"model.min_image_pixels: value {self.min_image_pixels!r} exceeds "
                f"max_image_pixels {self.max_image_pixels!r}"
            )

    def pixel_bounds(self) -> dict[str, int]:
        """The image size bounds this config sets (the non-zero ones of IMAGE_BOUNDS), by key."""
        return {key: getattr(self, key) for key in IMAGE_BOUNDS if getattr(self, key)}


def checked_family(family: str, config: dict[str, Any], path: str) -> str:
    """The family of a checkpoint's config.json; `family` if given and consistent, else an error naming both."""
    detected = family_for_model_type(str(config.get("model_type", "")), f"{path!r} (config.json)")
    if family and family != detected:
        raise ConfigError(f"model.family: value {family!r} contradicts model.path {path!r}, whose config.json has "
                          f"model_type {config.get('model_type')!r} (family {detected!r}): set model.family="
                          f"{detected} or leave it empty to detect it")
    return detected


@dataclass
class LoraConfig:
    """Low-rank adapters in the vision encoder and the language model (RD-MLDG: rank 8 in both)."""

    # Rank of the low-rank update matrices.
    r: int = 8
    # Scaling numerator: the update is multiplied by alpha / r.
    alpha: int = 16
    # Dropout on the adapter's input, in [0, 1).
    dropout: float = 0.05
    # Leaf module names adapted inside the vision encoder's blocks; names a family lacks are skipped
    # (Qwen2-VL: qkv, proj, fc1, fc2; Qwen2.5-VL: qkv, proj, gate/up/down_proj;
    # InternVL3: q/k/v_proj, projection_layer, fc1, fc2). The patch embedding and projector are not adapted.
    vision_targets: list[str] = field(
        default_factory=lambda: [
            "qkv", "proj", "q_proj", "k_proj", "v_proj", "projection_layer",
            "fc1", "fc2", "gate_proj", "up_proj", "down_proj",
        ]
    )
    # Leaf module names adapted inside the language model's decoder layers.
    language_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # Also adapt the vision encoder (False: language model only).
    apply_to_vision: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ConfigError(f"lora.r: value {self.r!r} must be an integer >= 1")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ConfigError(f"lora.alpha: value {self.alpha!r} must be a number > 0")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: value {self.dropout!r} must be in [0, 1)")
        for name in ("vision_targets", "language_targets"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(item, str) and item.strip() for item in value
            ):
                raise ConfigError(f"lora.{name}: value {value!r} must be a list of module names")
            setattr(self, name, list(value))
        if not self.language_targets and not (self.apply_to_vision and self.vision_targets):
            raise ConfigError(
                f"lora.language_targets: value {self.language_targets!r} leaves nothing to adapt "
                f"(apply_to_vision={self.apply_to_vision}, vision_targets={self.vision_targets!r})"
            )


def check_real_model(model: ModelConfig, dataset: str, offline: bool, key: str = "model") -> None:
    """A real dataset (not an offline benchmark) needs a real model: `{key}.path` empty is an error naming it."""
    if not offline and not model.path:
        raise ConfigError(
            f"{key}.path: dataset {dataset!r} is real data, but no model is given and the offline tiny model only "
            f"serves the offline benchmarks and smoke tests: set {key}.path to a Hugging Face id or a local model "
            f"directory (e.g. {key}.path=OpenGVLab/InternVL3-8B-hf or {key}.path=Qwen/Qwen2.5-VL-7B-Instruct)")
