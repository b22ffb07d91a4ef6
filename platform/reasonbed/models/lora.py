"""LoRA adapters in both towers of a multimodal LLM, with peft.

`apply_lora(model, lora_cfg, family)` wraps a transformers model in a peft `PeftModel` whose target
modules are one regex covering the family's vision-encoder blocks and language-model layers (RD-MLDG
adapts both with rank 8). Only the adapter weights are trainable afterwards.
`trainable_parameter_counts(model, family)` splits the trainable parameters into vision, language
and other, so callers and tests can check where the adapters went.
"""

from __future__ import annotations

from typing import Any

from reasonbed.config import ConfigError
from reasonbed.models.configs import LoraConfig
from reasonbed.models.families import ModelFamily, get_family


def _family(family: ModelFamily | str) -> ModelFamily:
    return get_family(family) if isinstance(family, str) else family


def peft_lora_config(lora_cfg: LoraConfig, family: ModelFamily | str) -> Any:
    """The peft `LoraConfig` for `lora_cfg` on `family` (target_modules as one regex)."""
    import peft

    family = _family(family)
    return peft.LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=family.lora_target_regex(
            lora_cfg.vision_targets, lora_cfg.language_targets, lora_cfg.apply_to_vision
        ),
        bias="none",
    )


def apply_lora(model: Any, lora_cfg: LoraConfig, family: ModelFamily | str) -> Any:
    """Wrap `model` with LoRA adapters per `lora_cfg`; returns the peft model.

    Raises `ConfigError` when the targets match no module of a tower that should be adapted.
    """
    import peft

    family = _family(family)
    peft_cfg = peft_lora_config(lora_cfg, family)
    peft_model = peft.get_peft_model(model, peft_cfg)
    counts = trainable_parameter_counts(peft_model, family)
    if lora_cfg.apply_to_vision and lora_cfg.vision_targets and counts["vision"] == 0:
        raise ConfigError(
            f"lora.vision_targets: value {lora_cfg.vision_targets!r} matches no module of the "
            f"{family.name} vision encoder"
        )
    if lora_cfg.language_targets and counts["language"] == 0:
        raise ConfigError(
            f"lora.language_targets: value {lora_cfg.language_targets!r} matches no module of the "
            f"{family.name} language model"
        )
    return peft_model


def trainable_parameter_counts(model: Any, family: ModelFamily | str) -> dict[str, int]:
    """Trainable parameter counts: vision, language, other, total, plus all (trainable or not)."""
    family = _family(family)
    counts = {"vision": 0, "language": 0, "other": 0, "total": 0, "all": 0}
    for name, parameter in model.named_parameters():
        number = parameter.numel()
        counts["all"] += number
        if not parameter.requires_grad:
            continue
        counts["total"] += number
        if family.is_vision_module(name):
            counts["vision"] += number
        elif family.is_language_module(name):
            counts["language"] += number
        else:
            counts["other"] += number
    return counts


def adapter_files(model: Any) -> dict[str, bytes]:
    """A peft model's current adapter as peft writes it (adapter_config.json, adapter_model.safetensors).

    Bytes, not a path: they travel through Ray's object store to a process on another node.
    """
    import os
    import tempfile
    from pathlib import Path

    inner = model.module if hasattr(model, "module") else model  # DDP/FSDP wrapper
    with tempfile.TemporaryDirectory() as directory:
        inner.save_pretrained(directory, safe_serialization=True)
        return {name: (Path(directory) / name).read_bytes() for name in os.listdir(directory)
                if (Path(directory) / name).is_file()}


def local_adapter(adapter: str) -> str:
    """A local directory with the adapter at `adapter`: `adapter` itself when local, else a copy of the URI's
    adapter files (s3://, gs://: the run's storage) in a fresh temporary directory, removed at exit. An
    engine on any node thus loads an adapter that another node wrote."""
    from reasonbed import storage

    if not storage.is_remote(adapter):
        return adapter
    import atexit
    import shutil
    import tempfile

    fs, path = storage.filesystem(adapter)
    target = tempfile.mkdtemp(prefix="reasonbed-adapter-")
    atexit.register(shutil.rmtree, target, True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not fs.isfile(f"{path}/{name}"):
            raise FileNotFoundError(f"adapter {adapter!r} has no {name}")
        fs.get(f"{path}/{name}", f"{target}/{name}")
    return target
