"""Run one GRPO job: split, examples, a Ray Train TorchTrainer with the GRPO loop, and the run directory.

`run_grpo(cfg)` resolves the data and the LODO split exactly as supervised training does
(reasonbed.train.driver.resolve / prepare_examples: no test-domain leakage), runs
`reasonbed.rl.loop.grpo_loop_per_worker` on Ray Train, and writes the same run directory layout:
config.yaml, metrics.jsonl (every report: evaluation steps, with the means of the step metrics since
the previous report), adapter/ (the final LoRA adapter), provenance.json and `done`; plus
steps.jsonl, every step's metrics (reward/<term>, reward/total, kl, clip_fraction, ...).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasonbed.config import from_dict
from reasonbed.train import checkpointing
from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import (
    TrainResult,
    build_trainer,
    open_run_dir,
    plain_metric,
    prepare_examples,
    resolve,
)


def run_grpo(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """GRPO fine-tuning of the LoRA adapter on one LODO split; returns the run directory and metrics."""

    from reasonbed.methods.grpo import GRPOConfig
    from reasonbed.models.loading import resolve_model_path
    from reasonbed.provenance import provenance
    from reasonbed.ray_runtime import init_ray
    from reasonbed.rewards import super_classes_of
    from reasonbed.rl.loop import HISTORY_FILE, grpo_loop_per_worker

    cfg, spec, root, index = resolve(cfg)
    from_dict(GRPOConfig, cfg.method_config, prefix="method_config.")  # fail here, not in a worker
    examples, rows = prepare_examples(cfg, spec, index)
    model_path = resolve_model_path(cfg.model)
    run_dir = open_run_dir(cfg)
    init_ray(address=cfg.ray_address or None)
    trainer = build_trainer(cfg, grpo_loop_per_worker, {
        "cfg": cfg, "examples": examples, "eval_rows": rows, "model_path": model_path, "data_root": root,
        "class_names": spec.display_names, "super_classes": super_classes_of(spec),
        "run_dir": str(run_dir)}, run_dir, callbacks)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"GRPO run {cfg.run_name!r} ended without a checkpoint")
    metrics = [] if result.metrics_dataframe is None else [
        {key: value for key, value in row.items() if plain_metric(value)}
        for row in result.metrics_dataframe.to_dict(orient="records")]
    adapter = run_dir / "adapter"
    with result.checkpoint.as_directory() as directory:
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(Path(directory) / "adapter", adapter)
        steps = checkpointing.history(directory)  # every step, across worker restarts
    with open(run_dir / HISTORY_FILE, "w") as handle:
        handle.writelines(json.dumps(row, default=float) + "\n" for row in steps)
    with open(run_dir / "metrics.jsonl", "w") as handle:
        handle.writelines(json.dumps(row, default=float) + "\n" for row in metrics)
    (run_dir / "provenance.json").write_text(json.dumps(provenance(cfg, index), indent=2))
    (run_dir / "done").write_text(json.dumps(metrics[-1] if metrics else {}, default=float))
    return TrainResult(run_dir, metrics, adapter)
