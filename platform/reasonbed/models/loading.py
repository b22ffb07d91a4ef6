"""Loading models: where a model lives (a path, a hub id, or the offline factory's tiny model), loading
it with its processor in transformers, and the chat prompt of one user turn.

`resolve_model_path`, `load_processor`, `load_model_and_processor` and `build_chat_prompt` are what the
rest of the platform calls; the facts of each architecture live in `reasonbed.models.families`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasonbed.config import ConfigError
from reasonbed.models.configs import ModelConfig
from reasonbed.models.families import get_family
from reasonbed.models.tiny import build_tiny_model


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


def load_processor(cfg: ModelConfig, path: str | None = None) -> Any:
    """The processor of the model `cfg` names, with cfg's image pixel bounds when set."""
    from transformers import AutoProcessor

    path = path or resolve_model_path(cfg)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except OSError as error:
        raise ConfigError(f"model.path: cannot load a processor from {path!r}: {error}") from error
    return get_family(cfg.family).configure_processor(processor, cfg)


def load_model_and_processor(cfg: ModelConfig) -> tuple[Any, Any]:
    """Load the model (family's transformers class, cfg.dtype) and its processor from the path or id.

    `trust_remote_code` is passed only as `cfg.trust_remote_code` says; an unknown family or a
    missing local path raises `ConfigError`/`RegistryError` naming it.
    """
    import torch

    family = get_family(cfg.family)
    path = resolve_model_path(cfg)
    dtype: Any = cfg.dtype if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    try:
        model = family.model_class.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    except OSError as error:
        raise ConfigError(f"model.path: cannot load a {family.name} model from {path!r}: {error}") from error
    processor = load_processor(cfg, path)
    return model, processor


def build_chat_prompt(processor: Any, text: str, system: str | None = None, with_image: bool = True,
                      examples: Sequence[tuple[str, str]] = ()) -> str:
    """The templated prompt string for one user turn (one image placeholder, then `text`).

    It ends with the assistant header, ready for generation; the same string works for
    transformers (pass it with the image to the processor) and vLLM (with multi_modal_data).

    `examples` are in-context examples as (user text, answer) pairs: each becomes an earlier user turn
    (its own image placeholder, then the text) answered by an assistant turn, so the images go in
    order: the examples' first, the query's last. Earlier turns, not images interleaved in one turn:
    the Qwen2-VL/Qwen2.5-VL and InternVL3 chat templates all render multi-turn image conversations
    (the form their instruction data has), and the model then answers the query in exactly the turn
    format the examples showed. With no examples the string is the single-turn one, unchanged.
    """
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    for example_text, answer in examples:
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example_text}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": text})
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
