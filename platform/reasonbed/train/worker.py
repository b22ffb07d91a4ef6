"""What every Ray Train worker loop (supervised and GRPO) does before its first step, and fault injection.

`set_up_worker` seeds, loads the model with LoRA (and the initial adapter, if any) and its processor,
wraps it for DDP/FSDP, builds AdamW and the warmup schedule, opens the image store and restores the
last checkpoint of a restarted worker group (`ray.train.get_checkpoint()`): step, the history kept
in the checkpoint's state, optimizer and scheduler (and notes the resume step in run_dir/replicas). `inject_fault_if_due` is the test hook behind
`fail_at_step`: the rank-0 worker process dies once, for real, after the checkpoints reported so far
are registered with the controller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass, replace
from typing import Any

from reasonbed.train import checkpointing
from reasonbed.train.data import ImageStore, total_steps

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: Any, model_path: str) -> tuple[Any, Any]:
    """The model with LoRA (and the initial adapter, if any) and its processor."""
    from reasonbed.models.loading import load_model_and_processor
    from reasonbed.models.lora import apply_lora

    model, processor = load_model_and_processor(replace(cfg.model, path=model_path))
    model = apply_lora(model, cfg.lora, cfg.model.family)
    if cfg.init_adapter:
        checkpointing.load_adapter_weights(model, cfg.init_adapter)
    return model, processor


def autocast(precision: str, device: Any) -> Any:
    """bf16 autocast when asked (or `auto` on a CUDA device that supports it); otherwise fp32."""
    import torch

    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizer_and_schedule(cfg: Any, trainable: list[Any], updates: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and the configured schedule with warmup, over `updates` optimiser steps."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = get_scheduler(cfg.optim.schedule, optimizer, num_warmup_steps=int(cfg.optim.warmup_ratio * updates),
                              num_training_steps=updates)
    return optimizer, scheduler


def report_with_checkpoint(metrics: dict[str, Any], model: Any, optimizer: Any, scheduler: Any, step: int,
                           history: list[dict[str, Any]], rank: int) -> None:
    """`ray.train.report` from every worker; rank 0 attaches a checkpoint whose state holds the step and history."""
    import tempfile

    import ray.train

    with tempfile.TemporaryDirectory() as directory:
        saved = None
        if rank == 0:
            checkpointing.save(directory, model, optimizer, scheduler, {"step": step, "history": history})
            saved = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=saved)


def write_replica_record(run_dir: str, rank: int, name: str, text: str) -> None:
    """A small per-rank diagnostic file under run_dir/replicas (adapter hash, resume step)."""
    from pathlib import Path

    directory = Path(run_dir) / "replicas"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"rank{rank}.{name}").write_text(text)


@dataclass
class WorkerSetup:
    """A worker's model, optimiser, schedule and data access, and where it resumes."""

    model: Any
    processor: Any
    device: Any
    trainable: list[Any]
    optimizer: Any
    scheduler: Any
    images: ImageStore
    steps: int  # global steps of the run
    start_step: int  # 0, or the step of the restored checkpoint
    history: list[dict[str, Any]]  # the checkpoint's history (empty on a fresh start)
    restored: bool


def set_up_worker(cfg: Any, config: dict[str, Any], rank: int, updates_per_step: int = 1) -> WorkerSetup:
    """Model, AdamW and schedule (over steps x `updates_per_step` optimiser updates), images, restored state."""
    import ray.train
    import ray.train.torch

    seed_everything(cfg.seed)
    model, processor = build_model(cfg, config["model_path"])
    processor.tokenizer.padding_side = "right"
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(model, parallel_strategy=cfg.scale.strategy)
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps = total_steps(len(config["examples"]), cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.max_steps)
    optimizer, scheduler = optimizer_and_schedule(cfg, trainable, steps * updates_per_step)
    images = ImageStore(config["data_root"], cfg.data.storage_options)
    start_step, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = checkpointing.restore(directory, model, optimizer, scheduler)
            start_step, history = int(state["step"]), list(state.get("history", []))
        log.info("rank %d resumed from step %d", rank, start_step)
        write_replica_record(config["run_dir"], rank, "resumed", str(start_step))
    elif cfg.fail_at_step and rank == 0:
        log.info("fault injection armed at step %d", cfg.fail_at_step)
    return WorkerSetup(model=model, processor=processor, device=device, trainable=trainable, optimizer=optimizer,
                       scheduler=scheduler, images=images, steps=steps, start_step=start_step, history=history,
                       restored=bool(checkpoint))


def inject_fault_if_due(cfg: Any, step: int, restored: bool, rank: int) -> None:
    """Test hook (`fail_at_step`): the rank-0 worker process exits at that step, once per run.

    It first waits until the controller has registered every checkpoint reported so far: dying
    before that would restart the group from scratch, arm the fault again, and use up the restarts.
    """
    if cfg.fail_at_step and step == cfg.fail_at_step and not restored and rank == 0:
        import ray.train

        ray.train.get_all_reported_checkpoints()
        os._exit(1)
