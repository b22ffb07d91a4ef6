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
import os
import random
import tempfile
import time
from typing import Any

from reasonbed.train import checkpointing
from reasonbed.train.data import ImageStore, step_indices, total_steps, worker_share

log = logging.getLogger(__name__)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: Any, model_path: str) -> tuple[Any, Any]:
    """The model with LoRA (and the initial adapter, if any) and its processor."""
    from dataclasses import replace

    from reasonbed.models.families import load_model_and_processor
    from reasonbed.models.lora import apply_lora

    model, processor = load_model_and_processor(replace(cfg.model, path=model_path))
    model = apply_lora(model, cfg.lora, cfg.model.family)
    if cfg.init_adapter:
        checkpointing.load_adapter_weights(model, cfg.init_adapter)
    return model, processor


def _autocast(precision: str, device: Any) -> Any:
    import contextlib

    import torch

    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    return metrics


def write_replica_record(run_dir: str, rank: int, name: str, text: str) -> None:
    """A small per-rank diagnostic file under run_dir/replicas (adapter hash, resume step)."""
    from pathlib import Path

    directory = Path(run_dir) / "replicas"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"rank{rank}.{name}").write_text(text)


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
    import ray.train.torch
    import torch
    from transformers import get_scheduler

    import reasonbed  # noqa: F401 - torchvision fix in this worker
    from reasonbed.methods.base import build_method
    from reasonbed.train.batching import collate, decode_image, encode_pathway
    from reasonbed.train.losses import pathway_loss, token_nll

    cfg = config["cfg"]
    examples, rows = config["examples"], config["eval_rows"]
    class_names = config["class_names"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    _seed_everything(cfg.seed)
    method = build_method(cfg.method, cfg.method_config, class_names)
    model, processor = build_model(cfg, config["model_path"])
    processor.tokenizer.padding_side = "right"
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(model, parallel_strategy=cfg.scale.strategy)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps = total_steps(len(examples), cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.max_steps)
    scheduler = get_scheduler(cfg.optim.schedule, optimizer, num_warmup_steps=int(cfg.optim.warmup_ratio * steps),
                              num_training_steps=steps)
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
    pad = processor.tokenizer.pad_token_id
    micro = cfg.optim.batch_size // world // cfg.optim.grad_accum
    model.train()
    started, window = time.perf_counter(), []
    for step in range(start_step, steps):
        if cfg.fail_at_step and step == cfg.fail_at_step and not checkpoint and rank == 0:
            # A real worker death, once. Wait until the controller has registered the checkpoints
            # reported so far (a crash before that would lose them, as a real one can), then die.
            ray.train.get_all_reported_checkpoints()
            os._exit(1)
        share = worker_share(step_indices(len(examples), cfg.optim.batch_size, step, cfg.seed), rank, world)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for chunk_start in range(0, len(share), micro):
            items, weights, normalise, owner = [], [], [], []
            for position, (index, epoch) in enumerate(share[chunk_start:chunk_start + micro]):
                example = examples[index]
                rng = random.Random(f"{cfg.seed}/{epoch}/{example['id']}")
                image = decode_image(images.read(example["path"]))
                for pathway in method.pathways(example, rng):
                    items.append(encode_pathway(processor, image, pathway.prompt, pathway.target))
                    weights.append(pathway.weight)
                    normalise.append(pathway.normalise)
                    owner.append(position)
            batch = {key: value.to(device) for key, value in collate(items, pad).items()}
            labels = batch.pop("labels")
            with _autocast(cfg.optim.precision, device):
                logits = model(**batch).logits
            nll, counts = token_nll(logits, labels)
            loss = pathway_loss(nll, counts, weights, normalise, owner, max(owner) + 1) / cfg.optim.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        if cfg.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        window.append(step_loss)
        done = step + 1
        if (cfg.eval.every and done % cfg.eval.every == 0) or done == steps:
            metrics = evaluate_all(model, processor, cfg, method, rows, images, class_names, rank, world)
            metrics.update({"step": done, "loss": sum(window) / len(window), "lr": scheduler.get_last_lr()[0],
                            "examples_seen": done * cfg.optim.batch_size,
                            "epoch": done * cfg.optim.batch_size / len(examples),
                            "seconds": time.perf_counter() - started, "total_steps": steps})
            with tempfile.TemporaryDirectory() as directory:
                saved = None
                history.append(metrics)
                if rank == 0:
                    checkpointing.save(directory, model, optimizer, scheduler, {"step": done, "history": history})
                    saved = ray.train.Checkpoint.from_directory(directory)
                ray.train.report(metrics, checkpoint=saved)
            window = []
        elif rank == 0 and done % 10 == 0:
            log.info("step %d/%d loss %.4f", done, steps, step_loss)
    write_replica_record(config["run_dir"], rank, "sha256", adapter_digest(model))
