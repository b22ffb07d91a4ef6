"""Loading models: where a model lives (a path, a hub id, or the offline factory's tiny model), its
family (detected from the checkpoint's config.json), the weights dtype, loading it with its processor
in transformers and gradient checkpointing (the chat prompt of one user turn is `reasonbed.models.encoding`'s).

`resolve_model_path`, `resolve_model`, `weights_dtype`, `load_processor`, `load_model_and_processor`,
and `set_gradient_checkpointing` are what the rest of the platform calls; the facts
of each architecture live in `reasonbed.models.families`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed.config import ConfigError
from reasonbed.models.configs import ModelConfig, checked_family
from reasonbed.models.families import get_family
from reasonbed.models.tiny import build_tiny_model

log = logging.getLogger(__name__)
# gradient_checkpointing=auto turns it on for models with more parameters than this.
GRADIENT_CHECKPOINTING_MIN_PARAMETERS = 1_000_000_000


def _looks_local(path: str) -> bool:
    """True for what can only be a filesystem path (absolute, ./, ~, or more than one slash)."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path


def resolve_model_path(cfg: ModelConfig) -> str:
    """The directory or hub id to load: `cfg.path`, or the factory's tiny model when it is empty.

    A path that can only be local and does not exist raises `ConfigError` naming it.
    """
    if not cfg.path:
        return str(build_tiny_model(cfg.family, size=cfg.tiny_size, seed=cfg.tiny_seed,
                                    pretrained=cfg.tiny_pretrained))
    local = Path(cfg.path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(f"model.path: {cfg.path!r} exists but holds no config.json (not a HF model dir)")
        return str(local)
    if _looks_local(cfg.path):
        raise ConfigError(f"model.path: local model directory {cfg.path!r} does not exist")
    return cfg.path  # a Hugging Face hub id such as "OpenGVLab/InternVL3-8B-hf"


def resolve_model(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with its path resolved (the tiny model built when empty) and its family known.

    A family not given is detected from the checkpoint's config.json (downloaded from the hub when it is
    not local or cached); a given family that contradicts it raises `ConfigError` naming both.
    """
    path = resolve_model_path(cfg)
    resolved = replace(cfg, path=path)  # __post_init__ detects/checks the family when config.json is readable
    if resolved.family:
        return resolved
    try:
        from huggingface_hub import hf_hub_download

        config_file = hf_hub_download(path, "config.json")
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, gated: name the path and the fix
        raise ConfigError(f"model.family: cannot read config.json of model.path {path!r} to detect the family "
                          f"({type(error).__name__}: {error}); set model.family") from error
    import json

    return replace(resolved, family=checked_family("", json.loads(Path(config_file).read_text()), path))


def weights_dtype(dtype: str) -> str:
    """The dtype name to load weights in: `dtype`, or for auto bfloat16 on a GPU that supports it, else float32."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def load_processor(cfg: ModelConfig, path: str | None = None) -> Any:
    """The processor of the model `cfg` names, with cfg's image pixel bounds when set."""
    from transformers import AutoProcessor

    cfg = resolve_model(replace(cfg, path=path) if path else cfg)
    try:
        processor = AutoProcessor.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
    except OSError as error:
        raise ConfigError(f"model.path: cannot load a processor from {cfg.path!r}: {error}") from error
    return get_family(cfg.family).configure_processor(processor, cfg)


def load_model_and_processor(cfg: ModelConfig) -> tuple[Any, Any]:
    """Load the model (family's transformers class, `weights_dtype(cfg.dtype)`) and its processor.

    `trust_remote_code` is passed only as `cfg.trust_remote_code` says; an unknown family or a
    missing local path raises `ConfigError`/`RegistryError` naming it.
    """
    import torch

    cfg = resolve_model(cfg)
    family = get_family(cfg.family)
    dtype = getattr(torch, weights_dtype(cfg.dtype))
    try:
        model = family.model_class.from_pretrained(cfg.path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    except OSError as error:
        raise ConfigError(f"model.path: cannot load a {family.name} model from {cfg.path!r}: {error}") from error
    processor = load_processor(cfg)
    return model, processor


def set_gradient_checkpointing(model: Any, setting: str) -> bool:
    """Turn on gradient checkpointing in both towers per `setting` (auto: above 1B parameters); True if on.

    Call before LoRA is applied. Non-reentrant checkpointing, and inputs that require grad
    (`enable_input_require_grads`), so that frozen embeddings under LoRA still pass gradients through.
    """
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if setting == "off" or (setting == "auto" and parameters <= GRADIENT_CHECKPOINTING_MIN_PARAMETERS):
        return False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    log.info("gradient checkpointing on (%s, %.2fB parameters)", setting, parameters / 1e9)
    return True
