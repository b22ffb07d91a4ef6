"""Adapters to evaluate: a LoRA adapter directory or a training run directory, checked against its base.

`resolve_adapter(path)` accepts peft's adapter directory (adapter_config.json) or a run directory of
`jobs/train.py` / a sweep trial (its `adapter/`). `check_adapter(adapter, model)` refuses an adapter
made for another base model before any engine loads it: every adapted module must exist in the base
architecture (built on the meta device from the model's config: no weights are read) with the
adapter's input and output sizes. A differing `base_model_name_or_path` alone (the same architecture
copied elsewhere) is logged, not refused. `with_trained_image_bounds(model, adapter)` gives the model the image
size bounds (model.min/max_image_pixels) the adapter was trained with, read from its export's reasonbed.json
or its run's config.yaml, so evaluation and predictions see images as training did.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from reasonbed.config import ConfigError, read_yaml
from reasonbed.models.configs import IMAGE_BOUNDS, ModelConfig
from reasonbed.models.families import get_family

log = logging.getLogger(__name__)
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def resolve_adapter(path: str) -> str:
    """The adapter directory for `path` (an adapter dir, or a run dir holding adapter/)."""
    directory = Path(path).expanduser()
    for candidate in (directory, directory / "adapter"):
        if (candidate / CONFIG_FILE).is_file():
            if not (candidate / WEIGHTS_FILE).is_file():
                raise ConfigError(f"adapter {path!r}: {candidate / WEIGHTS_FILE} is missing (safetensors weights)")
            return str(candidate.resolve())
    raise ConfigError(f"adapter {path!r} is neither a LoRA adapter directory ({CONFIG_FILE}) nor a training "
                      f"run directory holding adapter/{CONFIG_FILE}")


def trained_image_bounds(adapter_dir: str) -> dict[str, int]:
    """The non-zero image bounds an adapter was trained with: from its export's reasonbed.json (`reasonbed
    export`), else from its run's config.yaml (a run directory's adapter/); {} when neither says."""
    directory = Path(adapter_dir)
    if (directory / "reasonbed.json").is_file():
        recorded = json.loads((directory / "reasonbed.json").read_text())
    elif directory.name == "adapter" and (directory.parent / "config.yaml").is_file():
        recorded = read_yaml(directory.parent / "config.yaml").get("model") or {}
    else:
        return {}
    return {key: int(recorded[key]) for key in IMAGE_BOUNDS if recorded.get(key)}


def with_trained_image_bounds(model: ModelConfig, adapter_dir: str) -> ModelConfig:
    """`model` with the image bounds `adapter_dir` was trained with, unless `model` sets bounds of its own."""
    if not adapter_dir or model.pixel_bounds():
        return model
    bounds = trained_image_bounds(adapter_dir)
    if bounds:
        log.info("adapter %s was trained with %s: the model's processor uses them too", adapter_dir,
                 ", ".join(f"model.{key}={value}" for key, value in bounds.items()))
    return replace(model, **bounds) if bounds else model


def adapter_digest(adapter_dir: str) -> str:
    """A short hash of the adapter's weights (cache and shard keys change when the adapter does)."""
    digest = hashlib.sha256()
    with open(Path(adapter_dir) / WEIGHTS_FILE, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _lora_shapes(adapter_dir: str) -> dict[str, tuple[int, int]]:
    """Adapted module name -> (in_features, out_features) from the lora_A / lora_B weight shapes."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    with safe_open(str(Path(adapter_dir) / WEIGHTS_FILE), "np") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            for part, index in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
                if key.endswith(part):
                    module = key[:-len(part)].removeprefix("base_model.model.")
                    shape = handle.get_slice(key).get_shape()
                    shapes.setdefault(module, [0, 0])[index] = shape[1] if index == 0 else shape[0]
    return {module: (sizes[0], sizes[1]) for module, sizes in shapes.items()}


def check_adapter(adapter_dir: str, model: ModelConfig, model_path: str) -> None:
    """Raise `ConfigError` naming the adapter and the model when the adapter does not fit the model."""
    import torch
    import transformers

    saved = json.loads((Path(adapter_dir) / CONFIG_FILE).read_text()).get("base_model_name_or_path") or ""
    if saved and Path(saved).name != Path(model_path.rstrip("/")).name:
        log.warning("adapter %s was trained on %r; evaluating it on %r", adapter_dir, saved, model_path)
    config = transformers.AutoConfig.from_pretrained(model_path, trust_remote_code=model.trust_remote_code)
    with torch.device("meta"):
        base = get_family(model.family).model_class._from_config(config)
    modules = dict(base.named_modules())
    for name, (fan_in, fan_out) in sorted(_lora_shapes(adapter_dir).items()):
        module = modules.get(name)
        sizes = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if module is None or sizes != (fan_in, fan_out):
            found = "no such module" if module is None else f"{sizes[0]} -> {sizes[1]}"
            raise ConfigError(
                f"adapter {adapter_dir!r} (trained on {saved or 'an unnamed base'!r}) does not fit model "
                f"{model_path!r} ({model.family}): module {name!r} is {fan_in} -> {fan_out} in the adapter, "
                f"{found} in the model; evaluate it with the base model it was trained on")
