"""The Ray Train worker loop shared by every supervised method.

Each worker loads the model with LoRA, takes its share of every global batch from the
deterministic example stream, accumulates gradients over micro-batches, and steps AdamW with
warmup and a schedule; DDP averages gradients across workers. Every `eval.every` steps and at the
end it evaluates per domain and reports metrics together with a checkpoint (rank 0 writes it). A
restarted worker group resumes from `ray.train.get_checkpoint()`: step count, optimizer, scheduler
and data position carry on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from reasonbed.train import checkpointing
from reasonbed.train.data import ImageStore, step_indices, worker_share
from reasonbed.train.worker import (
    inject_fault_if_due,
    report_with_checkpoint,
    set_up_worker,
    write_replica_record,
)

log = logging.getLogger(__name__)


def evaluate_all(model: Any, processor: Any, cfg: Any, method: Any, rows: list, images: ImageStore,
                 class_names: list[str], rank: int, world: int) -> dict[str, float]:
    """Metrics over every worker's share, summed with all_reduce when distributed."""
    import torch
    import torch.distributed as dist

    from reasonbed.train.evaluate import count_correct, eval_rows, metrics_from_counts

    chosen = eval_rows(rows, cfg.eval.max_per_domain, cfg.seed)
    mine = chosen[rank::world]
    kinds = [kind for kind, on in (("direct", cfg.eval.direct), ("reasoning", cfg.eval.reasoning)) if on]
    if method.eval_prompt not in kinds:
        kinds.append(method.eval_prompt)
    groups = sorted({(row["domain"], row["part"]) for row in chosen})
    metrics: dict[str, float] = {}
    inner = checkpointing.unwrap(model)
    inner.eval()
    for kind in kinds:
        budget = cfg.eval.reasoning_max_tokens if kind == "reasoning" else 12
        counts = count_correct(inner, processor, mine, images.read, class_names, kind, budget, cfg.eval.batch_size)
        table = torch.tensor([counts.get(group, [0, 0, 0]) for group in groups], dtype=torch.long)
        if world > 1 and dist.is_initialized():
            dist.all_reduce(table)
        metrics.update(metrics_from_counts({g: table[i].tolist() for i, g in enumerate(groups)}, kind))
    inner.train()
    metrics["val_acc"] = metrics.get(f"val_acc_{method.eval_prompt}", 0.0)
    metrics["test_acc"] = metrics.get(f"test_acc_{method.eval_prompt}", 0.0)
    if f"heldout_acc_{method.eval_prompt}" in metrics:
        metrics["heldout_acc"] = metrics[f"heldout_acc_{method.eval_prompt}"]
    return metrics


def adapter_digest(model: Any) -> str:
    """sha256 over the trainable (LoRA) parameters, in name order: equal on every DDP replica."""
    import hashlib

    digest = hashlib.sha256()
    for name, parameter in sorted(checkpointing.unwrap(model).named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker (config: cfg, examples, eval rows, paths, class names)."""
    import ray.train

    import reasonbed  # noqa: F401 - torchvision fix in this worker
    from reasonbed.methods.base import build_method
    from reasonbed.train.step import supervised_step

    cfg = config["cfg"]
    examples, rows = config["examples"], config["eval_rows"]
    class_names = config["class_names"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    method = build_method(cfg.method, cfg.method_config, class_names)
    setup = set_up_worker(cfg, config, rank)
    model, processor, images = setup.model, setup.processor, setup.images
    optimizer, scheduler, steps, history = setup.optimizer, setup.scheduler, setup.steps, setup.history
    micro = cfg.optim.batch_size // world // cfg.optim.grad_accum
    model.train()
    started, window = time.perf_counter(), []
    for step in range(setup.start_step, steps):
        inject_fault_if_due(cfg, step, setup.restored, rank)
        share = worker_share(step_indices(len(examples), cfg.optim.batch_size, step, cfg.seed), rank, world)
        step_loss = supervised_step(model, processor, method, examples, share, images, cfg, setup.device, micro,
                                    setup.trainable, optimizer, scheduler)
        window.append(step_loss)
        done = step + 1
        if (cfg.eval.every and done % cfg.eval.every == 0) or done == steps:
            metrics = evaluate_all(model, processor, cfg, method, rows, images, class_names, rank, world)
            metrics.update({"step": done, "loss": sum(window) / len(window), "lr": scheduler.get_last_lr()[0],
                            "examples_seen": done * cfg.optim.batch_size,
                            "epoch": done * cfg.optim.batch_size / len(examples),
                            "seconds": time.perf_counter() - started, "total_steps": steps})
            history.append(metrics)
            report_with_checkpoint(metrics, model, optimizer, scheduler, done, history, rank)
            window = []
        elif rank == 0 and done % 10 == 0:
            log.info("step %d/%d loss %.4f", done, steps, step_loss)
    write_replica_record(config["run_dir"], rank, "sha256", adapter_digest(model))
