"""The Ray Train worker loop of GRPO (the RL counterpart of reasonbed.train.loop).

Each worker loads the model with LoRA (and the SFT adapter of `init_adapter`, if given), AdamW and
the schedule as in supervised training; rank 0 also starts the rollout engine. Global step s takes
the same deterministic example positions as supervised training (optim.batch_size images), so a
resumed run sees the same prompts. Every step's metrics are kept in a history; every `eval.every`
steps and at the end the workers evaluate per domain (reasonbed.train.loop.evaluate_all: val_acc,
test_acc, acc/<prompt>/<domain>/<part>) and report, with the means of the step metrics since the last
report, and rank 0 attaches a checkpoint (adapter, optimizer, scheduler, state and `steps.jsonl`,
the whole per-step history). A restarted worker group resumes from `ray.train.get_checkpoint()`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed.train import checkpointing
from reasonbed.train.data import ImageStore, step_indices, total_steps

log = logging.getLogger(__name__)
HISTORY_FILE = "steps.jsonl"


def window_means(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means of the step metrics over `rows` (keys present in any row)."""
    keys = sorted({key for row in rows for key in row if key not in ("step",)})
    means = {}
    for key in keys:
        values = [row[key] for row in rows if key in row]
        means[key] = sum(values) / len(values)
    return means


def grpo_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker (config: cfg, examples, eval rows, paths, class names, super-classes)."""
    import ray.train
    import ray.train.torch
    import torch
    from transformers import get_scheduler

    import reasonbed  # noqa: F401 - torchvision fix in this worker
    from reasonbed.methods.base import build_method
    from reasonbed.rl.rollout import build_rollout
    from reasonbed.rl.step import GRPOStep
    from reasonbed.train.loop import _seed_everything, build_model, evaluate_all

    cfg = config["cfg"]
    examples, rows, class_names = config["examples"], config["eval_rows"], config["class_names"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    _seed_everything(cfg.seed)
    method = build_method(cfg.method, cfg.method_config, class_names)
    options = method.options
    model, processor = build_model(cfg, config["model_path"])
    processor.tokenizer.padding_side = "right"
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(model, parallel_strategy=cfg.scale.strategy)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps = total_steps(len(examples), cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.max_steps)
    updates = steps * options.iterations
    scheduler = get_scheduler(cfg.optim.schedule, optimizer, num_warmup_steps=int(cfg.optim.warmup_ratio * updates),
                              num_training_steps=updates)
    images = ImageStore(config["data_root"], cfg.data.storage_options)
    start_step, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            start_step = int(checkpointing.restore(directory, model, optimizer, scheduler)["step"])
            history_path = Path(directory) / HISTORY_FILE
            if history_path.is_file():
                history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()]
        log.info("rank %d resumed from step %d", rank, start_step)
    rollout = None
    if rank == 0:
        model_cfg = replace(cfg.model, path=config["model_path"])
        rollout = build_rollout(options.engine, model, processor, model_cfg, options)
    runner = GRPOStep(model=model, processor=processor, optimizer=optimizer, scheduler=scheduler, options=options,
                      class_names=class_names, super_classes=config["super_classes"], prompt=method.prompt(),
                      read_image=images.read, rollout=rollout, device=device,
                      grad_accum=cfg.optim.grad_accum, max_grad_norm=cfg.optim.max_grad_norm,
                      precision=cfg.optim.precision, seed=cfg.seed,
                      domains=sorted({example["domain"] for example in examples}))
    model.train()
    started, window = time.perf_counter(), []
    try:
        for step in range(start_step, steps):
            if cfg.fail_at_step and step == cfg.fail_at_step and not checkpoint and rank == 0:
                os._exit(1)  # a real worker death, once: the restarted group resumes from a checkpoint
            batch = [examples[index] for index, _ in step_indices(len(examples), cfg.optim.batch_size, step, cfg.seed)]
            row = runner.run(batch, step, rank, world)
            history.append(row)
            window.append(row)
            done = step + 1
            if rank == 0:
                log.info("grpo step %d/%d reward %.3f kl %.4f clip %.3f (%.1fs)", done, steps, row["reward/total"],
                         row["kl"], row["clip_fraction"], row["step_seconds"])
            if (cfg.eval.every and done % cfg.eval.every == 0) or done == steps:
                metrics = window_means(window)
                metrics.update(evaluate_all(model, processor, cfg, method, rows, images, class_names, rank, world))
                metrics.update({"step": done, "examples_seen": done * cfg.optim.batch_size,
                                "epoch": done * cfg.optim.batch_size / len(examples),
                                "seconds": time.perf_counter() - started, "total_steps": steps})
                with tempfile.TemporaryDirectory() as directory:
                    saved = None
                    if rank == 0:
                        checkpointing.save(directory, model, optimizer, scheduler, {"step": done, **metrics})
                        with open(Path(directory) / HISTORY_FILE, "w") as handle:
                            handle.writelines(json.dumps(item) + "\n" for item in history)
                        saved = ray.train.Checkpoint.from_directory(directory)
                    ray.train.report(metrics, checkpoint=saved)
                window = []
    finally:
        if rollout is not None:
            rollout.close()
