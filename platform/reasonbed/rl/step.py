"""GRPO's worker step: rollouts, rewards, advantages, and the policy update through the shared optimizer step.

`GRPOStep(setup)(batch, step)` on each worker of the shared loop (reasonbed.train.worker):
1. rank 0 samples G completions per image of the global batch with its rollout engine (an engine of
   the engine registry: `vllm_actor`, a vLLM actor synced with the current adapter every step, or `hf`,
   the live policy through the one sampling path), plus G for a transformed view when the consistency
   reward is on, and broadcasts them (torch.distributed, gloo or NCCL) to every rank;
2. each rank scores its share of the prompts with the weighted rewards and normalises them per group;
3. each rank encodes prompt+completion (reasonbed.models.encoding: the prompt and image once per group),
   computes reference log-probs with the adapter disabled (the base model: no second copy), old
   log-probs (only when `iterations` > 1; with 1 they equal the current ones), and takes `iterations`
   optimizer steps (reasonbed.train.step.optimizer_step) on the clipped-ratio + KL loss, micro-batched by
   optim.grad_accum; DDP averages the gradients.
It returns the step's metrics, averaged over ranks: reward/<term>, reward/total, kl, clip_fraction,
loss, rollout accuracy (overall and per source domain) and completion length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reasonbed.inference.base import ENGINES, Completion, EngineConfig, Request, SamplingConfig, build_engine
from reasonbed.models.encoding import append_target, decode_image, encode_prompt
from reasonbed.prompts import answer_class
from reasonbed.rewards import score
from reasonbed.rl.grpo import group_advantages, grpo_loss
from reasonbed.train import checkpointing
from reasonbed.train.data import worker_share
from reasonbed.train.losses import token_logps
from reasonbed.train.step import device_batch, forward_logits, optimizer_step

log = logging.getLogger(__name__)


@dataclass
class Group:
    """One training image's rollouts: G completions, and G for its transformed view (consistency)."""

    example: dict[str, Any]
    completions: list[Completion]
    views: list[Completion] = field(default_factory=list)


def vision_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the added tokens that mark or hold image/video content (<|image_pad|>, <img>, ...)."""
    return {index for token, index in tokenizer.get_added_vocab().items()
            if any(word in token.lower() for word in ("image", "video", "vision", "img"))}


def completion_ids(completion: Completion, tokenizer: Any, max_tokens: int, stop_ids: set[int] = frozenset()
                   ) -> list[int]:
    """The sampled token ids (engines report them), else the re-tokenised text (+ end token if it ended).

    A completion is cut before its first id in `stop_ids`: a vision token sampled as text (a near-random
    policy does that) would otherwise ask the model for image features that do not exist.
    """
    ids = list(getattr(completion, "token_ids", None) or [])
    if not ids:
        ids = tokenizer(completion.text, add_special_tokens=False)["input_ids"]
        if completion.completion_tokens < max_tokens:
            ids.append(tokenizer.eos_token_id)
    cut = next((position for position, token in enumerate(ids) if token in stop_ids), len(ids))
    return ids[:cut] or [tokenizer.eos_token_id]


def rollout_engine_config(cfg: Any, options: Any, model_path: str) -> EngineConfig:
    """The engine config of the rollouts of `method_config.engine` for a run of `cfg` on the model at `model_path`.

    The vLLM rollout actor asks Ray for `method_config.rollout_cpus` CPUs when it is set; by default for none in a
    run on scale.backend=local, which waits while its rollouts generate (ScaleConfig.engine_cpus; asking for one
    more would leave two such trials of parallel studies on 2 CPUs each waiting for a third until
    `rollout_start_timeout_s`, then failing), and for one on Ray Train, beside the workers, which keep theirs.
    """
    model_cfg = replace(cfg.model, path=model_path)
    if options.engine != "vllm":
        return EngineConfig(name="hf", model=model_cfg, batch_size=16)
    cpus = cfg.scale.engine_cpus(1.0) if options.rollout_cpus is None else options.rollout_cpus
    return EngineConfig(name="vllm_actor", model=model_cfg, max_model_len=options.rollout_max_model_len,
                        num_cpus=cpus, num_gpus=options.rollout_gpus, engine_kwargs=dict(options.rollout_engine_kwargs))


def rollout_engine(setup: Any) -> Any:
    """The rollout engine of `method_config.engine`, from the engine registry (rank 0 only)."""
    options, cfg = setup.method.options, setup.cfg
    engine_cfg = rollout_engine_config(cfg, options, setup.config["model_path"])
    if ENGINES.get(engine_cfg.name).follows_policy:  # an engine of its own (an actor) that the policy syncs
        return build_engine(engine_cfg, model=setup.model, start_timeout_s=options.rollout_start_timeout_s,
                            resources={**cfg.scale.engine_resources, **options.rollout_resources})
    return build_engine(engine_cfg, model=checkpointing.unwrap(setup.model), processor=setup.processor)  # shares it


class GRPOStep:
    """GRPO's worker step (rank 0 also owns the rollout engine)."""

    def __init__(self, setup: Any) -> None:
        self.setup, self.options = setup, setup.method.options
        self.prompt = setup.method.prompt()
        self.stop_ids = vision_token_ids(setup.processor.tokenizer)
        self.domains = sorted({example["domain"] for example in setup.examples})
        if self.options.disable_dropout:
            import torch

            for module in setup.model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        self.engine = rollout_engine(setup) if setup.ctx.rank == 0 else None

    # -- 1. rollouts ---------------------------------------------------------------------------------
    def collect(self, batch: Sequence[dict[str, Any]], step: int) -> list[Group]:
        """G completions per image from the rollout engine, synced to the current adapter first."""
        from reasonbed.rewards.transforms import TRANSFORMS

        options, read = self.options, self.setup.images.read
        self.engine.sync(self.setup.model)
        sampling = SamplingConfig(n=options.group_size, temperature=options.temperature, top_p=options.top_p,
                                  max_tokens=options.max_tokens, seed=self.setup.cfg.seed * 1_000_003 + step)
        images = [decode_image(read(example["path"])) for example in batch]
        keys = [f"{step}/{position}/{example['id']}" for position, example in enumerate(batch)]
        outputs = self.engine.generate([Request(image, self.prompt, {"id": key})
                                        for image, key in zip(images, keys, strict=True)], sampling)
        views: list[list[Completion]] = [[] for _ in batch]
        if "consistency" in options.rewards:
            transform = TRANSFORMS.get(options.consistency_transform)
            views = self.engine.generate([Request(transform(image), self.prompt, {"id": key + "/view"})
                                          for image, key in zip(images, keys, strict=True)], sampling)
        return [Group(dict(example), list(completions), list(view))
                for example, completions, view in zip(batch, outputs, views, strict=True)]

    # -- 2. rewards ----------------------------------------------------------------------------------
    def rewards(self, groups: Sequence[Group]) -> tuple[Any, dict[str, float], dict[str, list[float]]]:
        """Per-completion total reward (prompt-major), mean of every term, and domain accuracy counts."""
        import torch

        options, class_names = self.options, self.setup.class_names
        texts = [c.text for g in groups for c in g.completions]
        labels = [int(g.example["label"]) for g in groups for _ in g.completions]
        scores = score(options.rewards, options.reward_weights, texts, labels, class_names=class_names,
                       prompt_kind=options.prompt, super_classes=self.setup.config["super_classes"],
                       completion_tokens=[c.completion_tokens for g in groups for c in g.completions],
                       view_completions=[[v.text for v in g.views] for g in groups for _ in g.completions],
                       hierarchy_partial=options.hierarchy_partial, outside_penalty=options.outside_penalty,
                       length_budget=options.length_budget)
        total = torch.tensor(scores.total, dtype=torch.float32)
        grouped = total.view(len(groups), options.group_size)
        correct = [float(answer_class(text, options.prompt, class_names) == label)
                   for text, label in zip(texts, labels, strict=True)]
        means = {**scores.means(), "reward_std": float(grouped.std(dim=1).mean()),
                 "zero_std_groups": float((grouped.std(dim=1) == 0).float().mean()),
                 "rollout_acc": sum(correct) / max(1, len(correct)),
                 "completion_tokens": sum(c.completion_tokens for g in groups for c in g.completions) / max(1, len(texts))}
        by_domain = {domain: [0.0, 0.0] for domain in self.domains}
        for index, value in enumerate(correct):
            domain = groups[index // options.group_size].example.get("domain")
            if domain in by_domain:
                by_domain[domain][0] += value
                by_domain[domain][1] += 1
        return total, means, by_domain

    # -- 3. policy update ----------------------------------------------------------------------------
    def encode(self, groups: Sequence[Group]) -> list[dict[str, Any]]:
        setup, tokenizer = self.setup, self.setup.processor.tokenizer
        items = []
        for group in groups:
            encoded = encode_prompt(setup.processor, decode_image(setup.images.read(group.example["path"])), self.prompt)
            items.extend(append_target(encoded, completion_ids(c, tokenizer, self.options.max_tokens, self.stop_ids))
                         for c in group.completions)
        return items

    def update(self, items: list[dict[str, Any]], advantages: Any) -> dict[str, float]:
        """`iterations` optimizer steps on the GRPO loss over `items` (micro-batched by optim.grad_accum)."""
        import torch

        setup, options = self.setup, self.options
        inner = checkpointing.unwrap(setup.model)
        size = max(1, len(items) // setup.cfg.optim.grad_accum)
        chunks = []
        for start in range(0, len(items), size):
            batch, labels = device_batch(setup, items[start:start + size])
            ref = old = None
            with torch.no_grad():
                if options.kl_weight > 0:
                    with inner.disable_adapter():
                        ref = token_logps(forward_logits(setup, batch), labels)[0]
                if options.iterations > 1:
                    old = token_logps(forward_logits(setup, batch), labels)[0]
            chunks.append((batch, labels, ref, old, advantages[start:start + size].to(setup.device)))
        stats: list[dict[str, float]] = []

        def loss_of(chunk: tuple) -> Any:
            batch, labels, ref, old, adv = chunk
            logps, mask = token_logps(forward_logits(setup, batch), labels)
            loss, chunk_stats = grpo_loss(logps, logps.detach() if old is None else old, ref, adv, mask,
                                          options.clip_epsilon, options.kl_weight)
            stats.append(chunk_stats)
            return loss

        losses = [optimizer_step(setup, chunks, loss_of) for _ in range(options.iterations)]
        means = {key: sum(row[key] for row in stats) / len(stats) for key in stats[0]}
        return {"loss": sum(losses) / len(losses), **means}

    # -- the whole step ------------------------------------------------------------------------------
    def __call__(self, positions: Sequence[tuple[int, int]], step: int) -> dict[str, float]:
        setup = self.setup
        rank, world = setup.ctx.rank, setup.ctx.world
        batch = [setup.examples[index] for index, _ in positions]
        started = time.perf_counter()
        groups = self.collect(batch, step) if rank == 0 else None
        rollout_seconds = time.perf_counter() - started
        if world > 1:
            import torch.distributed as dist

            box = [groups]
            dist.broadcast_object_list(box, src=0)
            groups = box[0]
        mine = worker_share(groups, rank, world)
        total, metrics, by_domain = self.rewards(mine)
        advantages = group_advantages(total, self.options.group_size, self.options.scale_advantages)
        metrics.update(self.update(self.encode(mine), advantages))
        metrics = _mean_over_ranks(metrics, world)
        for domain, (correct, count) in _sum_over_ranks(by_domain, world).items():
            if count:
                metrics[f"rollout_acc/{domain}"] = correct / count
        if rank == 0 and getattr(self.engine, "synced", 0):  # vLLM: the adapter version the rollouts used
            metrics["adapter_version"] = float(self.engine.synced)
        metrics.update({"lr": setup.scheduler.get_last_lr()[0], "workers": world,
                        "rollout_seconds": rollout_seconds, "step_seconds": time.perf_counter() - started})
        if rank == 0:
            log.info("grpo step %d/%d reward %.3f kl %.4f clip %.3f (%.1fs)", step + 1, setup.steps,
                     metrics["reward/total"], metrics["kl"], metrics["clip_fraction"], metrics["step_seconds"])
        return metrics

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def _mean_over_ranks(metrics: dict[str, float], world: int) -> dict[str, float]:
    if world <= 1:
        return metrics
    import torch
    import torch.distributed as dist

    keys = sorted(metrics)
    values = torch.tensor([metrics[key] for key in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {key: float(value) / world for key, value in zip(keys, values, strict=True)}


def _sum_over_ranks(table: dict[str, list[float]], world: int) -> dict[str, list[float]]:
    if world <= 1 or not table:
        return table
    import torch
    import torch.distributed as dist

    keys = sorted(table)
    values = torch.tensor([table[key] for key in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {key: values[i].tolist() for i, key in enumerate(keys)}
