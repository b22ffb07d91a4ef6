"""The one worker loop of every training method, and what it sets up before its first step.

`worker_loop(config)` is the entry point of each Ray Train worker (and of the `local` backend, in
this process). It checks that no example reaching it may leak (`check_no_leakage`), seeds, has rank 0
log the memory estimate, loads the model with LoRA (and the initial adapter, if any) and its processor,
wraps it for DDP/FSDP, builds AdamW and the warmup schedule, opens the image store and restores the
last checkpoint of a restarted worker group (step, the per-step history and the reports so far,
optimizer and scheduler): that is the `WorkerSetup`, passed whole to the method's step. Then, for every
global step, the method's step (`SupervisedStep` for pathway methods; a method may name its own, as
GRPO does) trains on the step's examples; every `eval.every` steps and at the end the workers evaluate
per domain and report the metrics with a checkpoint. `fail_at_step` makes the rank-0 worker process die
once, for real, after the checkpoints reported so far are registered (the fault-tolerance tests).
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

from reasonbed import storage
from reasonbed.data.splits import LeakageError
from reasonbed.train import checkpointing
from reasonbed.train.context import checkpoint_dir_name
from reasonbed.train.data import ImageStore, step_indices

log = logging.getLogger(__name__)


@dataclass
class WorkerSetup:
    """Everything a worker step needs: config, context, method, model, optimisation state, data."""

    cfg: Any
    ctx: Any
    method: Any
    model: Any
    processor: Any
    device: Any
    trainable: list[Any]
    optimizer: Any
    scheduler: Any
    images: ImageStore
    examples: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    class_names: list[str]
    config: dict[str, Any]  # the loop config the driver sent (paths, super-classes, ...)
    steps: int  # global steps of the run
    start_step: int = 0  # 0, or the step of the restored checkpoint
    history: list[dict[str, Any]] = field(default_factory=list)  # every step's metrics so far
    reports: list[dict[str, Any]] = field(default_factory=list)  # every evaluation report so far
    restored: bool = False


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_no_leakage(examples: list[dict[str, Any]], rows: list[dict[str, Any]], test_domain: str,
                     val_domain: str = "") -> None:
    """Refuse training examples that are test-domain, held-out-domain or source out-part images."""
    forbidden = {row["id"]: row for row in rows if row["role"] != "source" or row["part"] != "in"}
    leaked = [example for example in examples if example["domain"] in (test_domain, val_domain)
              or example["id"] in forbidden or example.get("part", "in") != "in"]
    if leaked:
        shown = ", ".join(f"{example['path']} ({example['domain']})" for example in leaked[:3])
        raise LeakageError(f"{len(leaked)} training example(s) would leak into training: {shown}; only the source "
                           f"domains' in parts may be trained on (test domain {test_domain!r}"
                           + (f", held-out domain {val_domain!r})" if val_domain else ")"))


def memory_estimate(cfg: Any, model: Any) -> Any:
    """The per-worker memory estimate (weights, LoRA, optimizer, activations), None when config.json is not
    readable. dtype auto is what the workers load: bfloat16 with GPUs (scale.use_gpu), float32 on CPU."""
    from reasonbed.models.memory import estimate_training_memory

    dtype = model.dtype if model.dtype != "auto" else ("bfloat16" if cfg.scale.use_gpu else "float32")
    return estimate_training_memory(model, cfg.lora, cfg.micro_batch, dtype=dtype)


def log_memory_estimate(cfg: Any, model: Any) -> None:
    """Log the memory estimate (when config.json is readable). Rank 0 calls it before loading the weights: the
    estimate builds the model on the meta device, which imports transformers, so the driver - a Tune trial,
    a job on the head node - never has to."""
    estimate = memory_estimate(cfg, model)
    if estimate is not None:
        log.info("%s", estimate.summary())


def worker_model(cfg: Any, model_path: str) -> Any:
    """The model config this worker loads: the driver's resolved path and family, or - for the offline tiny
    model, when the driver's copy is not on this node - the same tiny model built here (deterministic)."""
    from reasonbed.models.loading import resolve_model

    if not cfg.model.path and not os.path.isdir(model_path):
        return resolve_model(cfg.model)
    return resolve_model(replace(cfg.model, path=model_path))


def build_model(cfg: Any, model_cfg: Any) -> tuple[Any, Any]:
    """The model of `model_cfg` (gradient checkpointing per config) with LoRA, the initial adapter if any (a
    local path or a URI in the run's storage), and its processor."""
    from reasonbed.models.loading import load_model_and_processor, set_gradient_checkpointing
    from reasonbed.models.lora import apply_lora

    model, processor = load_model_and_processor(model_cfg)
    set_gradient_checkpointing(model, model_cfg.gradient_checkpointing)
    model = apply_lora(model, cfg.lora, model_cfg.family)
    if cfg.init_adapter:
        checkpointing.load_adapter_weights(model, cfg.init_adapter)
    return model, processor


def optimizer_and_schedule(cfg: Any, trainable: list[Any], updates: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and the configured schedule with warmup, over `updates` steps."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = get_scheduler(cfg.optim.schedule, optimizer, num_warmup_steps=int(cfg.optim.warmup_ratio * updates),
                              num_training_steps=max(1, updates))
    return optimizer, scheduler


def write_replica_record(run_dir: str, rank: int, name: str, text: str) -> None:
    """A small per-rank diagnostic file under run_dir/replicas (adapter hash, resume step)."""
    from pathlib import Path

    directory = Path(run_dir) / "replicas"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"rank{rank}.{name}").write_text(text)


def set_up_worker(config: dict[str, Any], ctx: Any) -> WorkerSetup:
    """Model, AdamW and schedule, images, and the restored state of a restarted worker group."""
    from reasonbed.methods.base import build_method

    cfg, examples, rows = config["cfg"], config["examples"], config["eval_rows"]
    check_no_leakage(examples, rows, cfg.test_domain, cfg.val_domain)
    method = build_method(cfg.method, cfg.method_config, config["class_names"])
    seed_everything(cfg.seed)
    model_cfg = worker_model(cfg, config["model_path"])
    config["model_path"] = model_cfg.path  # this node's copy (GRPO's rollout engine loads it too)
    if ctx.rank == 0:  # before the weights load: what to expect, ahead of an out-of-memory error
        log_memory_estimate(cfg, model_cfg)
    model, processor = build_model(cfg, model_cfg)
    processor.tokenizer.padding_side = "right"
    model = ctx.prepare_model(model, cfg.scale.strategy)
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps = method.total_steps(cfg, len(examples))
    optimizer, scheduler = optimizer_and_schedule(cfg, trainable, steps * method.updates_per_step(cfg))
    setup = WorkerSetup(cfg=cfg, ctx=ctx, method=method, model=model, processor=processor, device=ctx.device,
                        trainable=trainable, optimizer=optimizer, scheduler=scheduler,
                        images=ImageStore(config["data_root"], cfg.data.storage_options), examples=examples,
                        rows=rows, class_names=list(config["class_names"]), config=config, steps=steps)
    with ctx.checkpoint() as directory:
        if directory:
            state = checkpointing.restore(directory, model, optimizer, scheduler)
            setup.start_step, setup.restored = int(state["step"]), True
            setup.history, setup.reports = list(state.get("history", [])), list(state.get("reports", []))
            if setup.start_step >= max(steps, 1):
                raise RuntimeError(
                    f"run {config['run_name']!r} restored a checkpoint at step {setup.start_step}, at or past its "
                    f"{steps} steps: its storage holds a finished run (a stage reusing another stage's name?); "
                    f"give this run its own name or storage_path")
            log.info("rank %d resumed from step %d", ctx.rank, setup.start_step)
            write_replica_record(config["run_dir"], ctx.rank, "resumed", str(setup.start_step))
    return setup


def window_means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means of the step metrics over `rows` (keys present in any row; numbers only)."""
    keys = sorted({key for row in rows for key, value in row.items()
                   if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)})
    return {key: sum(row[key] for row in rows if key in row) / sum(1 for row in rows if key in row) for key in keys}


def evaluate_all(setup: WorkerSetup) -> dict[str, Any]:
    """Metrics over every worker's share of the evaluation rows, summed with all_reduce when distributed."""
    import torch
    import torch.distributed as dist

    from reasonbed.train.evaluate import (
        count_correct,
        eval_rows,
        metrics_from_counts,
        prompts_to_evaluate,
        selection_metrics,
    )

    cfg, ctx = setup.cfg, setup.ctx
    select_on = setup.method.select_on(cfg)
    chosen = eval_rows(setup.rows, cfg.eval.max_per_domain, cfg.seed, cfg.eval.in_parts)
    roles = {row["domain"]: row["role"] for row in setup.rows}
    groups = sorted({(row["domain"], row["part"]) for row in chosen})
    inner = checkpointing.unwrap(setup.model)
    metrics: dict[str, Any] = {}
    for kind in prompts_to_evaluate(cfg, select_on):
        budget = cfg.eval.reasoning_max_tokens if kind == "reasoning" else cfg.eval.direct_max_tokens
        counts = count_correct(inner, setup.processor, chosen[ctx.rank::ctx.world], setup.images.read,
                               setup.class_names, kind, budget, cfg.eval.batch_size)
        table = torch.tensor([counts.get(group, [0, 0, 0, 0]) for group in groups], dtype=torch.long)
        if ctx.world > 1 and dist.is_initialized():
            dist.all_reduce(table)
        metrics.update(metrics_from_counts({g: table[i].tolist() for i, g in enumerate(groups)}, kind, roles))
    metrics.update(selection_metrics(metrics, select_on))
    return metrics


def report(setup: WorkerSetup, done: int, window: list[dict[str, Any]], started: float) -> None:
    """Evaluate and report from every worker; rank 0 attaches a checkpoint (adapter, optimizer, history)."""
    import tempfile

    cfg = setup.cfg
    metrics: dict[str, Any] = window_means(window)
    metrics.update(evaluate_all(setup))
    metrics.update({"step": done, "examples_seen": done * cfg.optim.batch_size,
                    "epoch": done * cfg.optim.batch_size / max(1, len(setup.examples)),
                    "lr": setup.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started,
                    "total_steps": setup.steps,
                    "checkpoint": storage.join(setup.config["checkpoint_root"], checkpoint_dir_name(done))})
    setup.reports.append(metrics)
    with tempfile.TemporaryDirectory() as directory:
        saved = None
        if setup.ctx.rank == 0:
            checkpointing.save(directory, setup.model, setup.optimizer, setup.scheduler,
                               {"step": done, "history": setup.history, "reports": setup.reports})
            saved = directory
        setup.ctx.report(metrics, saved, done)


def inject_fault_if_due(setup: WorkerSetup, step: int) -> None:
    """Test hook (`fail_at_step`): the rank-0 worker process exits at that step, once per run.

    It first waits until the controller has registered every checkpoint reported so far: dying
    before that would restart the group from scratch, arm the fault again, and use up the restarts.
    """
    cfg = setup.cfg
    if cfg.fail_at_step and step == cfg.fail_at_step and not setup.restored and setup.ctx.rank == 0:
        setup.ctx.wait_for_checkpoints()
        os._exit(1)


def load_step(setup: WorkerSetup) -> Any:
    """The method's worker step: its own (a "module:Class" path) or the supervised one."""
    path = setup.method.worker_step
    if not path:
        from reasonbed.train.step import SupervisedStep

        return SupervisedStep(setup)
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(setup)


def adapter_digest(model: Any) -> str:
    """sha256 over the trainable (LoRA) parameters, in name order: equal on every DDP replica."""
    import hashlib

    digest = hashlib.sha256()
    for name, parameter in sorted(checkpointing.unwrap(model).named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker_loop(config: dict[str, Any]) -> None:
    """Entry point of every worker (config: cfg, examples, eval rows, paths, class names, ...)."""
    import reasonbed  # noqa: F401 - torchvision fix in this worker
    from reasonbed.train.context import LocalContext, RayContext

    cfg = config["cfg"]
    ctx = LocalContext(config["local_storage"], cfg.scale.keep_checkpoints) if config.get("local_storage") \
        else RayContext()
    setup = set_up_worker(config, ctx)
    step_fn = load_step(setup)
    setup.model.train()
    started, window = time.perf_counter(), []
    try:
        if not setup.restored and (setup.steps == 0 or cfg.eval.at_start):
            report(setup, 0, [], started)  # the untrained model (zero-shot), before any step
        for step in range(setup.start_step, setup.steps):
            inject_fault_if_due(setup, step)
            lr = setup.scheduler.get_last_lr()[0]  # the learning rate this step uses
            row = step_fn(step_indices(len(setup.examples), cfg.optim.batch_size, step, cfg.seed), step)
            done = step + 1
            row = {"step": done, **row, "lr": lr}
            setup.history.append(row)
            window.append(row)
            if (cfg.eval.every and done % cfg.eval.every == 0) or done == setup.steps:
                report(setup, done, window, started)
                window = []
            if ctx.rank == 0 and (done % 10 == 0 or done == setup.steps):
                log.info("step %d/%d %s", done, setup.steps,
                         " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step" and isinstance(v, float)))
    finally:
        step_fn.close()
    write_replica_record(config["run_dir"], ctx.rank, "sha256", adapter_digest(setup.model))
