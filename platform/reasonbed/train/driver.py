"""Run one fine-tuning job: split, examples, a Ray Train TorchTrainer, and the run directory.

`run_training(cfg)` resolves the data and the LODO split (asserting no test-domain leakage), joins
teacher chains for methods that need them, runs the worker loop on Ray Train (DDP on CPU/GPU,
FailureConfig for restarts), and writes `run_dir`: config.yaml, metrics.jsonl (every report),
adapter/ (the final LoRA adapter), provenance.json and a `done` marker.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reasonbed.config import ConfigError, config_differences, dump_yaml, read_yaml
from reasonbed.data import catalog
from reasonbed.data.reader import scan
from reasonbed.data.specs import DatasetSpec
from reasonbed.data.splits import lodo_split
from reasonbed.train import checkpointing
from reasonbed.train.config import TrainConfig

log = logging.getLogger(__name__)
PARTS = {"train": "in", "val": "out", "test": "test"}
HELDOUT_PART = "heldout"  # every image of `val_domain` (leave-one-domain-out selection runs)


@dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict[str, Any]]
    adapter: Path

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


# Keys a rerun into an existing run directory may change (where and how it runs, not what it trains).
RESUMABLE_KEYS = ("ray_address", "fail_at_step", "scale.max_failures", "scale.keep_checkpoints")


def open_run_dir(cfg: TrainConfig) -> Path:
    """The run directory made ready for `cfg`: a new one, or one that holds a run of the same config.

    Rerunning the same command resumes (Ray Train picks up the run's last checkpoint; a finished run
    returns its result); a different config in the same directory is an error that names the keys,
    since resuming would silently give the old run's results under the new config.
    """
    run_dir = Path(cfg.run_dir).resolve()
    saved = run_dir / "config.yaml"
    if saved.is_file():
        differences = config_differences(read_yaml(saved), cfg, RESUMABLE_KEYS)
        if differences:
            shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
            raise ConfigError(f"run_dir {str(run_dir)!r} holds a run with another config ({shown}): rerun with "
                              f"its config to resume it, or choose a new run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "done").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "replicas", ignore_errors=True)  # per-run worker diagnostics, written afresh
    dump_yaml(cfg, saved)
    return run_dir


def chains_by_image(chains: str, storage_options: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Kept chains of a generation output, per image id."""
    from reasonbed.generation.shards import kept_chains

    table = kept_chains(chains, storage_options)
    found: dict[str, list[str]] = {}
    for image_id, text in zip(table.column("image_id").to_pylist(), table.column("chain").to_pylist(), strict=True):
        found.setdefault(image_id, []).append(text)
    return found


def prepare_examples(cfg: TrainConfig, spec: DatasetSpec, index: Sequence[dict[str, Any]],
                     chains: dict[str, list[str]] | None = None) -> tuple[list[dict], list[dict]]:
    """Training examples (source in parts, with chains) and evaluation rows (every part, labelled).

    With `val_domain`, that source domain is left out of training and all its rows are part `heldout`.
    """
    from reasonbed.methods.base import build_method

    split = lodo_split(spec, index, cfg.test_domain, cfg.data.holdout_fraction, cfg.data.split_seed)
    part_of = split.part_of()
    rows = [{**row, "part": HELDOUT_PART if row["domain"] == cfg.val_domain else PARTS[part_of[row["id"]]]}
            for row in index]
    method = build_method(cfg.method, cfg.method_config, spec.display_names)
    if method.needs_chains and not cfg.chains:
        raise ConfigError(f"method {cfg.method!r} needs teacher chains: set chains=PATH to a generation output "
                          f"(jobs/generate_reasoning.py)")
    examples = []
    for row in rows:
        if row["part"] != "in":
            continue
        example = {**row, "chains": (chains or {}).get(row["id"], [])}
        if method.usable(example):
            examples.append(example)
    if not examples:
        raise ConfigError(f"method {cfg.method!r}: no usable training example (chains {cfg.chains!r} has no kept "
                          f"chain for any training image of test domain {cfg.test_domain!r})")
    with_chain = sum(1 for example in examples if example["chains"])
    log.info("%d training examples (%d with kept chains), %d evaluation rows", len(examples), with_chain, len(rows))
    return examples, rows


def resolve(cfg: TrainConfig) -> tuple[TrainConfig, DatasetSpec, str, list[dict[str, Any]]]:
    """Fill defaults that depend on the data (test domain), check it, and scan the index."""
    spec, root = catalog.resolve(cfg.data)
    test_domain = cfg.test_domain or spec.domains[0]
    spec.check_domain(test_domain)
    if cfg.val_domain:
        spec.check_domain(cfg.val_domain)
        if cfg.val_domain == test_domain:
            raise ConfigError(f"val_domain {cfg.val_domain!r} is the test domain: hold out another source domain")
    index = scan(spec, root, storage_options=cfg.data.storage_options)
    return replace(cfg, test_domain=test_domain), spec, root, index


def build_trainer(cfg: TrainConfig, loop: Any, loop_config: dict[str, Any], run_dir: Path,
                  callbacks: Sequence[Any] = ()) -> Any:
    """The TorchTrainer for a worker loop: workers and resources, storage, restarts, checkpoints kept."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.scale.num_workers, use_gpu=cfg.scale.use_gpu,
                                     resources_per_worker={"CPU": cfg.scale.cpus_per_worker}),
        run_config=RunConfig(
            name=cfg.run_name, storage_path=cfg.storage_path or str(run_dir / "ray"),
            failure_config=FailureConfig(max_failures=cfg.scale.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.scale.keep_checkpoints),
            callbacks=list(callbacks) or None,
        ),
    )


def run_training(cfg: TrainConfig, callbacks: Sequence[Any] = (), chains_override: dict[str, list[str]] | None = None,
                 write_run_dir: bool = True) -> TrainResult:
    """Train one method on one LODO split on Ray Train; returns the run directory and metrics."""
    from reasonbed.models.loading import resolve_model_path
    from reasonbed.ray_runtime import init_ray
    from reasonbed.train.loop import train_loop_per_worker

    cfg, spec, root, index = resolve(cfg)
    chains = chains_override if chains_override is not None else (
        chains_by_image(cfg.chains) if cfg.chains else None)
    examples, rows = prepare_examples(cfg, spec, index, chains)
    model_path = resolve_model_path(cfg.model)
    if write_run_dir:
        run_dir = open_run_dir(cfg)
    else:
        run_dir = Path(cfg.run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(run_dir / "replicas", ignore_errors=True)
    init_ray(address=cfg.ray_address or None)
    trainer = build_trainer(cfg, train_loop_per_worker, {
        "cfg": cfg, "examples": examples, "eval_rows": rows, "model_path": model_path, "data_root": root,
        "class_names": spec.display_names, "run_dir": str(run_dir)}, run_dir, callbacks)
    result = trainer.fit()
    adapter = run_dir / "adapter"
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.run_name!r} ended without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        metrics = checkpointing.history(directory)  # every report, across worker restarts
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(Path(directory) / "adapter", adapter)
    if write_run_dir:
        with open(run_dir / "metrics.jsonl", "w") as handle:
            for row in metrics:
                handle.write(json.dumps({k: v for k, v in row.items() if plain_metric(v)}, default=float) + "\n")
        from reasonbed.provenance import provenance

        (run_dir / "provenance.json").write_text(json.dumps(provenance(cfg, index), indent=2))
        (run_dir / "done").write_text(json.dumps(metrics[-1] if metrics else {}, default=float))
    return TrainResult(run_dir, metrics, adapter)


def plain_metric(value: Any) -> bool:
    """A value metrics.jsonl keeps: a finite number, a string, a bool or None (not arrays or NaN)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (int, str, bool)) or value is None
