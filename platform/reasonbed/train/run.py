"""Run a training config end to end: chains for the smoke test, then the method's driver.

`run(cfg)` asks the METHODS registry how the method runs: its own driver (a multi-stage method such
as SARR names one) or one training run (`reasonbed.train.driver.run_training`). With `smoke=True`
and a method that needs chains but none given, template-teacher chains are generated first into the
run directory. With `tracking.mlflow` / `tracking.wandb` set, the finished run is logged once
(`log_training_run`: params, per-step loss and lr, per-evaluation metrics, its report files).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path

from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import run_training
from reasonbed.train.rundir import TrainResult


def smoke_chains(cfg: TrainConfig) -> str:
    """Template-teacher chains for the synthetic benchmark (CPU runs need true chains to learn from)."""
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation
    from reasonbed.inference.base import EngineConfig, SamplingConfig

    output = str(Path(cfg.run_dir).resolve() / "chains")
    run_generation(GenerationConfig(data=cfg.data, engine=EngineConfig(name="template", template_noise=0.1),
                                    sampling=SamplingConfig(n=2), output=output, shard_size=64,
                                    ray_address=cfg.ray_address))
    return output


def run(cfg: TrainConfig, smoke: bool = False, callbacks: tuple = ()) -> TrainResult:
    from reasonbed.methods.base import method_class
    from reasonbed.train.driver import resolve

    cfg = resolve(cfg)[0]
    method = method_class(cfg.method)
    method.parse_options(cfg.method_config)  # a bad option fails here, before any work
    if smoke and method.needs_chains and not cfg.chains:
        cfg = replace(cfg, chains=smoke_chains(cfg))
    if method.driver:
        module, _, name = method.driver.partition(":")
        result = getattr(importlib.import_module(module), name)(cfg, callbacks=callbacks)
    else:
        result = run_training(cfg, callbacks=callbacks)
    if cfg.tracking.enabled:
        log_training_run(cfg, result)
    return result


TRACKED = "tracking.json"  # in the run directory: where the run was logged (a rerun does not log it again)
REPORT_FILES = ("metrics.jsonl", "steps.jsonl", "selected.json", "config.yaml", "provenance.json")


def log_training_run(cfg: TrainConfig, result: TrainResult) -> dict[str, str]:
    """Log a finished run to MLflow / W&B: its config, every step's loss and lr, every evaluation's metrics,
    and its report files (metrics.jsonl, steps.jsonl, selected.json, config, provenance) as artifacts."""
    from reasonbed.tracking import log_run

    marker = Path(result.run_dir) / TRACKED
    if marker.is_file():
        return json.loads(marker.read_text())
    steps_file = Path(result.run_dir) / "steps.jsonl"
    steps = [json.loads(line) for line in steps_file.read_text().splitlines() if line.strip()] \
        if steps_file.is_file() else []
    per_step = {key for row in steps for key in row if key != "step"}  # loss, lr: from the steps, not the
    evaluations = [{k: v for k, v in row.items() if k not in per_step} for row in result.metrics]  # window means
    logged = log_run(cfg.tracking, cfg.run_name, cfg, [*steps, *evaluations],
                     [Path(result.run_dir) / name for name in REPORT_FILES], kind="train",
                     directory=result.run_dir, default_experiment=f"{cfg.data.dataset}-{cfg.method}")
    marker.write_text(json.dumps(logged, indent=2))
    return logged
