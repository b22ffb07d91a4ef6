"""Export the chosen checkpoint: its LoRA adapter, or the base model with the adapter merged, in Hugging Face
format (safetensors), with a model card (README.md) and `reasonbed.json`.

`export(cfg)` picks the checkpoint (reasonbed.share.source), copies its adapter (from local or object
storage), checks it against the base model (reasonbed.evaluation.adapters.check_adapter) and writes
either the adapter - `adapter_config.json` naming the resolved base model, `adapter_model.safetensors` -
or, with `merge`, the base model with the adapter merged into its weights (peft `merge_and_unload`)
and its processor: a plain model directory that transformers' `from_pretrained` and vLLM load with no
adapter. An existing, non-empty output directory is refused: nothing already written is lost.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reasonbed import storage
from reasonbed.config import ConfigError, from_dict
from reasonbed.models.configs import IMAGE_BOUNDS, ModelConfig
from reasonbed.share.source import Chosen, choose

log = logging.getLogger(__name__)
INFO_FILE = "reasonbed.json"  # what `reasonbed predict` reads from an export: classes, prompt, family, image bounds


@dataclass
class ExportConfig:
    """What to export and where (the `export` command's resolved config)."""

    source: str = ""  # a training run directory or a sweep folder (local path or s3://)
    out: str = ""  # the output directory (local; created; must be empty)
    merge: bool = False  # write the base model with the adapter merged in (else the adapter alone)
    selection: Literal["training_domain", "oracle", "leave_one_domain_out"] = "training_domain"  # sweeps only
    method: str = ""  # sweeps: the method whose selected model to export (empty: the only one)
    test_domain: str = ""  # sweeps: the test domain (empty: the only one)
    seed: int = -1  # sweeps: the trial seed (-1: the only one)

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("RUN_OR_SWEEP: a training run directory or a sweep folder to export from is required")
        if not self.out:
            raise ConfigError("--out: the output directory is required")
        if storage.is_remote(self.out):
            raise ConfigError(f"--out: {self.out!r} must be a local directory (upload the export afterwards)")


def _fetch_adapter(chosen: Chosen, into: Path) -> Path:
    """The chosen checkpoint's adapter/ as a local directory (downloaded when on object storage)."""
    for uri in (storage.join(chosen.checkpoint, "adapter"), chosen.fallback_adapter):
        if not uri:
            continue
        fs, path = storage.filesystem(uri)
        if fs.exists(f"{path}/adapter_config.json"):
            if not storage.is_remote(uri):
                return Path(path)
            fs.get(f"{path}/", str(into), recursive=True)
            return into
    raise ConfigError(f"{chosen.source!r}: the chosen checkpoint {chosen.checkpoint!r} holds no adapter/ (was it "
                      f"pruned? checkpoint retention keeps the best by val_acc and the latest)")


def _class_names(train_config: dict[str, Any]) -> tuple[list[str], str]:
    """Display class names (prompt order) and the dataset name of the run's data."""
    from reasonbed.data import catalog

    data = from_dict(catalog.DataConfig, train_config.get("data") or {})
    if data.dataset == "folder":
        spec, _ = catalog.resolve(data)
    else:
        from reasonbed.data.specs import get_spec

        spec = get_spec(data.dataset)
    return spec.display_names, spec.name


def export(cfg: ExportConfig) -> Path:
    """Write the export; returns the output directory."""
    from reasonbed.evaluation.adapters import check_adapter
    from reasonbed.models.loading import resolve_model
    from reasonbed.prompts import prompt_for
    from reasonbed.share.card import model_card

    out = Path(cfg.out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: {str(out)!r} exists and is not empty; choose a new directory")
    chosen = choose(cfg.source, cfg.selection, cfg.method, cfg.test_domain, None if cfg.seed < 0 else cfg.seed)
    model_cfg = resolve_model(from_dict(ModelConfig, chosen.train_config.get("model") or {}))  # family known
    base = model_cfg.path
    classes, dataset = _class_names(chosen.train_config)
    prompt = str(chosen.report.get("select_on") or "direct")
    with tempfile.TemporaryDirectory(prefix="reasonbed-export-") as scratch:
        adapter = _fetch_adapter(chosen, Path(scratch) / "adapter")
        check_adapter(str(adapter), model_cfg, base)
        out.mkdir(parents=True, exist_ok=True)
        if cfg.merge:
            _write_merged(model_cfg, base, adapter, out)
        else:
            _write_adapter(adapter, base, out)
    info = {"name": f"{dataset}-{chosen.train_config.get('method')}-{chosen.train_config.get('test_domain')}"
                    f"{'-merged' if cfg.merge else '-lora'}",
            "base_model": base, "family": model_cfg.family, "merged": cfg.merge, "dataset": dataset,
            # the image bounds training applied (0: the processor's own), so predictions see images alike
            **{key: getattr(model_cfg, key) for key in IMAGE_BOUNDS},
            "classes": classes, "prompt": prompt, "prompt_text": prompt_for(prompt, classes),
            "test_domain": chosen.train_config.get("test_domain"), "selection": chosen.selection,
            "source": chosen.source, "checkpoint": chosen.checkpoint, "step": chosen.report.get("step"),
            "metrics": {key: chosen.report[key] for key in ("val_acc", "test_acc", "test_out_acc")
                        if key in chosen.report},
            "data_manifest_sha256": chosen.provenance.get("data_manifest_sha256"),
            "code_version": chosen.provenance.get("code_version")}
    (out / INFO_FILE).write_text(json.dumps(info, indent=2, default=str))
    (out / "README.md").write_text(model_card(chosen, info))
    log.info("exported %s (%s) to %s", chosen.label, "merged" if cfg.merge else "adapter", out)
    return out


def _write_adapter(adapter: Path, base: str, out: Path) -> None:
    """The adapter's files, its config naming the base model it was checked against."""
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(adapter / name, out / name)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))


def _write_merged(model_cfg: ModelConfig, base: str, adapter: Path, out: Path) -> None:
    """The base model with the adapter merged into its weights, and the base model's processor."""
    from dataclasses import replace

    from peft import PeftModel

    from reasonbed.models.loading import load_model_and_processor

    model, processor = load_model_and_processor(replace(model_cfg, path=base))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
