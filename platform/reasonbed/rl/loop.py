"""The Ray Train worker loop of GRPO (the RL counterpart of reasonbed.train.loop).

Each worker loads the model with LoRA (and the SFT adapter of `init_adapter`, if given), AdamW and
the schedule as in supervised training; rank 0 also starts the rollout engine. Global step s takes
the same deterministic example positions as supervised training (optim.batch_size images), so a
resumed run sees the same prompts. Every step's metrics are kept in a history; every `eval.every`
steps and at the end the workers evaluate per domain (reasonbed.train.loop.evaluate_all: val_acc,
test_acc, acc/<prompt>/<domain>/<part>) and report, with the means of the step metrics since the last
report, and rank 0 attaches a checkpoint (adapter, optimizer, scheduler, and a state holding the
whole per-step history). A restarted worker group resumes from `ray.train.get_checkpoint()`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from reasonbed.train.data import step_indices
from reasonbed.train.worker import inject_fault_if_due, report_with_checkpoint, set_up_worker

log = logging.getLogger(__name__)
HISTORY_FILE = "steps.jsonl"  # the run directory's file of every step's metrics


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

    import reasonbed  # noqa: F401 - torchvision fix in this worker
    from reasonbed.methods.base import build_method
    from reasonbed.rl.rollout import build_rollout
    from reasonbed.rl.step import GRPOStep
    from reasonbed.train.loop import evaluate_all

    cfg = config["cfg"]
    examples, rows, class_names = config["examples"], config["eval_rows"], config["class_names"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    method = build_method(cfg.method, cfg.method_config, class_names)
    options = method.options
    setup = set_up_worker(cfg, config, rank, updates_per_step=options.iterations)
    model, processor, steps, history = setup.model, setup.processor, setup.steps, setup.history
    rollout = None
    if rank == 0:
        model_cfg = replace(cfg.model, path=config["model_path"])
        rollout = build_rollout(options.engine, model, processor, model_cfg, options)
    runner = GRPOStep(model=model, processor=processor, optimizer=setup.optimizer, scheduler=setup.scheduler,
                      options=options, class_names=class_names, super_classes=config["super_classes"],
                      prompt=method.prompt(), read_image=setup.images.read, rollout=rollout, device=setup.device,
                      grad_accum=cfg.optim.grad_accum, max_grad_norm=cfg.optim.max_grad_norm,
                      precision=cfg.optim.precision, seed=cfg.seed,
                      domains=sorted({example["domain"] for example in examples}))
    model.train()
    started, window = time.perf_counter(), []
    try:
        for step in range(setup.start_step, steps):
            inject_fault_if_due(cfg, step, setup.restored, rank)
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
                metrics.update(evaluate_all(model, processor, cfg, method, rows, setup.images, class_names,
                                            rank, world))
                metrics.update({"step": done, "examples_seen": done * cfg.optim.batch_size,
                                "epoch": done * cfg.optim.batch_size / len(examples),
                                "seconds": time.perf_counter() - started, "total_steps": steps})
                # the checkpoint's history is every step's metrics (the driver's steps.jsonl)
                report_with_checkpoint(metrics, model, setup.optimizer, setup.scheduler, done, history, rank)
                window = []
    finally:
        if rollout is not None:
            rollout.close()
