"""One GRPO step, independent of Ray: rollouts, rewards, advantages, and the policy update.

`GRPOStep.run(batch, step, rank, world)`:
1. rank 0 samples G completions per image of the global batch with its rollout engine (after syncing
   the current adapter to it), plus G for a transformed view when the consistency reward is on, and
   broadcasts them (torch.distributed, gloo or NCCL) to every rank;
2. each rank scores its share of the prompts with the weighted rewards and normalises them per group;
3. each rank encodes prompt+completion (the prompt and image once per group), computes reference
   log-probs with the adapter disabled (the base model: no second copy), old log-probs (only when
   `iterations` > 1; with 1 they equal the current ones), and takes `iterations` AdamW steps on the
   clipped-ratio + KL loss, micro-batched by optim.grad_accum; DDP averages the gradients.
It returns the step's metrics, averaged over ranks: reward/<term>, reward/total, kl, clip_fraction,
loss, rollout accuracy (overall and per source domain) and completion length.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonbed.inference.base import Completion, SamplingConfig
from reasonbed.rewards import score
from reasonbed.rewards.builtin import parse_answer
from reasonbed.rl.grpo import group_advantages, grpo_loss, per_token_logps
from reasonbed.train import checkpointing
from reasonbed.train.batching import TEXT_KEYS, collate, decode_image


@dataclass
class Group:
    """One training image's rollouts: G completions, and G for its transformed view (consistency)."""

    example: dict[str, Any]
    completions: list[Completion]
    views: list[Completion] = field(default_factory=list)


def encode_prompt(processor: Any, image: Any, prompt: str) -> dict[str, Any]:
    """The templated prompt with its image, unbatched (as reasonbed.train.batching.encode_pathway)."""
    from reasonbed.models.loading import build_chat_prompt

    encoded = processor(text=[build_chat_prompt(processor, prompt)], images=[image], return_tensors="pt")
    return dict(encoded)


def with_completion(encoded: dict[str, Any], completion_ids: Sequence[int]) -> dict[str, Any]:
    """Prompt + completion tokens, labels only on the completion."""
    import torch

    prompt_ids = encoded["input_ids"][0]
    target = torch.tensor(list(completion_ids), dtype=prompt_ids.dtype)
    item = {"input_ids": torch.cat([prompt_ids, target]), "labels": torch.cat([torch.full_like(prompt_ids, -100), target])}
    item["attention_mask"] = torch.ones_like(item["input_ids"])
    for key, value in encoded.items():
        if key in TEXT_KEYS:
            continue
        if value.dim() == 2 and value.shape == encoded["input_ids"].shape:  # per-token (mm_token_type_ids)
            item[key] = torch.cat([value[0], torch.zeros(len(target), dtype=value.dtype)])
        else:  # vision tensors
            item[key] = value
    return item


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


class GRPOStep:
    """The per-step work of GRPO on one worker (rank 0 also owns the rollout engine)."""

    def __init__(self, *, model: Any, processor: Any, optimizer: Any, scheduler: Any, options: Any,
                 class_names: Sequence[str], super_classes: Sequence[str | None], prompt: str,
                 read_image: Callable[[str], bytes], rollout: Any, device: Any, grad_accum: int = 1,
                 max_grad_norm: float = 1.0, precision: str = "fp32", seed: int = 0,
                 domains: Sequence[str] = ()) -> None:
        self.model, self.processor, self.optimizer, self.scheduler = model, processor, optimizer, scheduler
        self.options, self.class_names, self.super_classes = options, list(class_names), list(super_classes)
        self.prompt, self.read_image, self.rollout, self.device = prompt, read_image, rollout, device
        self.grad_accum, self.max_grad_norm, self.precision, self.seed = grad_accum, max_grad_norm, precision, seed
        self.domains = sorted(domains)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.stop_ids = vision_token_ids(processor.tokenizer)
        if options.disable_dropout:
            import torch

            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0

    # -- 1. rollouts ---------------------------------------------------------------------------------
    def collect(self, batch: Sequence[dict[str, Any]], step: int) -> list[Group]:
        """G completions per image from the rollout engine, synced to the current adapter first."""
        from reasonbed.rewards.transforms import TRANSFORMS

        options = self.options
        self.rollout.sync(self.model)
        sampling = SamplingConfig(n=options.group_size, temperature=options.temperature, top_p=options.top_p,
                                  max_tokens=options.max_tokens, seed=self.seed * 1_000_003 + step)
        images = [decode_image(self.read_image(example["path"])) for example in batch]
        keys = [f"{step}/{position}/{example['id']}" for position, example in enumerate(batch)]
        outputs = self.rollout.generate(images, keys, self.prompt, sampling)
        views: list[list[Completion]] = [[] for _ in batch]
        if "consistency" in options.rewards:
            transform = TRANSFORMS.get(options.consistency_transform)
            views = self.rollout.generate([transform(image) for image in images], [key + "/view" for key in keys],
                                          self.prompt, sampling)
        return [Group(dict(example), list(completions), list(view))
                for example, completions, view in zip(batch, outputs, views, strict=True)]

    # -- 2. rewards ----------------------------------------------------------------------------------
    def rewards(self, groups: Sequence[Group]) -> tuple[Any, dict[str, float], dict[str, list[float]]]:
        """Per-completion total reward (prompt-major), mean of every term, and domain accuracy counts."""
        import torch

        options = self.options
        texts = [c.text for g in groups for c in g.completions]
        labels = [int(g.example["label"]) for g in groups for _ in g.completions]
        scores = score(options.rewards, options.reward_weights, texts, labels, class_names=self.class_names,
                       prompt_kind=options.prompt, super_classes=self.super_classes,
                       completion_tokens=[c.completion_tokens for g in groups for c in g.completions],
                       view_completions=[[v.text for v in g.views] for g in groups for _ in g.completions],
                       hierarchy_partial=options.hierarchy_partial, outside_penalty=options.outside_penalty,
                       length_budget=options.length_budget)
        total = torch.tensor(scores.total, dtype=torch.float32)
        grouped = total.view(len(groups), options.group_size)
        correct = [float(parse_answer(text, self.class_names, options.prompt) == label)
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
        tokenizer = self.processor.tokenizer
        items = []
        for group in groups:
            encoded = encode_prompt(self.processor, decode_image(self.read_image(group.example["path"])), self.prompt)
            items.extend(with_completion(encoded, completion_ids(c, tokenizer, self.options.max_tokens, self.stop_ids))
                         for c in group.completions)
        return items

    def update(self, items: list[dict[str, Any]], advantages: Any) -> dict[str, float]:
        """`iterations` optimizer steps on the GRPO loss over `items` (micro-batched)."""
        import torch

        from reasonbed.train.worker import autocast

        options = self.options
        inner = checkpointing.unwrap(self.model)
        pad = self.processor.tokenizer.pad_token_id
        size = max(1, len(items) // self.grad_accum)
        chunks = []
        for start in range(0, len(items), size):
            batch = {key: value.to(self.device) for key, value in collate(items[start:start + size], pad).items()}
            labels = batch.pop("labels")
            ref = old = None
            with torch.no_grad(), autocast(self.precision, self.device):
                if options.kl_weight > 0:
                    with inner.disable_adapter():
                        ref = per_token_logps(inner(**batch).logits, labels)[0]
                if options.iterations > 1:
                    old = per_token_logps(inner(**batch).logits, labels)[0]
            chunks.append((batch, labels, ref, old, advantages[start:start + size].to(self.device)))
        totals: dict[str, float] = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0}
        for _ in range(options.iterations):
            self.optimizer.zero_grad(set_to_none=True)
            for batch, labels, ref, old, adv in chunks:
                with autocast(self.precision, self.device):
                    logits = self.model(**batch).logits
                logps, mask = per_token_logps(logits, labels)
                loss, stats = grpo_loss(logps, logps.detach() if old is None else old, ref, adv, mask,
                                        options.clip_epsilon, options.kl_weight)
                (loss / len(chunks)).backward()
                totals["loss"] += float(loss.detach())
                for key, value in stats.items():
                    totals[key] += value
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
        count = options.iterations * len(chunks)
        return {key: value / count for key, value in totals.items()}

    # -- the whole step ------------------------------------------------------------------------------
    def run(self, batch: Sequence[dict[str, Any]], step: int, rank: int = 0, world: int = 1) -> dict[str, float]:
        from reasonbed.train.data import worker_share

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
        if rank == 0 and getattr(self.rollout, "synced", 0):  # vLLM: the adapter version the rollouts used
            metrics["adapter_version"] = float(self.rollout.synced)
        metrics.update({"step": step + 1, "lr": self.scheduler.get_last_lr()[0], "workers": world,
                        "rollout_seconds": rollout_seconds, "step_seconds": time.perf_counter() - started})
        return metrics


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
