"""One optimizer step given a loss function, and the supervised step every pathway method uses.

`optimizer_step(setup, chunks, loss_of)` is the one optimizer step of the platform (supervised
methods, SARR's stages and GRPO alike): gradients of `loss_of(chunk)` accumulate over the chunks
(micro-batches; each loss divided by their number), are clipped to `optim.max_grad_norm`, and AdamW and
the schedule step once; DDP averages the gradients across workers.

`SupervisedStep` is the worker step of methods that supply pathways: a worker's share of the global
batch is cut into micro-batches of images; each image gives the method's pathways (prompt, target,
weight), encoded with the processor and collated; the loss is `reasonbed.train.losses.pathway_loss`
over the targets' token NLLs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from reasonbed.models.encoding import collate, decode_image, encode_pathway
from reasonbed.train.data import worker_share
from reasonbed.train.losses import pathway_loss, token_nll


def autocast(precision: str, device: Any) -> Any:
    """bf16 autocast when asked (or `auto` on a CUDA device that supports it); otherwise fp32."""
    import contextlib

    import torch

    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizer_step(setup: Any, chunks: Sequence[Any], loss_of: Callable[[Any], Any]) -> float:
    """Accumulate the gradients of `loss_of` over `chunks`, clip, step AdamW and the schedule; the summed loss."""
    import torch

    setup.optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for chunk in chunks:
        loss = loss_of(chunk) / len(chunks)
        loss.backward()
        total += float(loss.detach())
    if setup.cfg.optim.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(setup.trainable, setup.cfg.optim.max_grad_norm)
    setup.optimizer.step()
    setup.scheduler.step()
    return total


def device_batch(setup: Any, items: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], Any]:
    """Encoded items (prompt + target, `reasonbed.models.encoding`) collated onto the run's device: the model's
    inputs, and the labels (-100 outside the targets) apart."""
    collated = collate(items, setup.processor.tokenizer.pad_token_id)
    batch = {key: value.to(setup.device) for key, value in collated.items()}
    return batch, batch.pop("labels")


def forward_logits(setup: Any, batch: dict[str, Any]) -> Any:
    """The model's logits for a collated batch (labels removed beforehand), under the run's precision."""
    with autocast(setup.cfg.optim.precision, setup.device):
        return setup.model(**batch).logits


class SupervisedStep:
    """The worker step of pathway methods (direct, reasoning, mtct, and SARR's stages)."""

    def __init__(self, setup: Any) -> None:
        self.setup = setup
        cfg, world = setup.cfg, setup.ctx.world
        self.micro = cfg.optim.batch_size // world // cfg.optim.grad_accum

    def _chunk(self, share: Sequence[tuple[int, int]], step: int) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        setup = self.setup
        items, weights, normalise, owner = [], [], [], []
        for position, (index, epoch) in enumerate(share):
            example = setup.examples[index]
            rng = random.Random(f"{setup.cfg.seed}/{epoch}/{example['id']}")
            image = decode_image(setup.images.read(example["path"]))
            for pathway in setup.method.pathways(example, rng):
                items.append(encode_pathway(setup.processor, image, pathway.prompt, pathway.target))
                weights.append(pathway.weight)
                normalise.append(pathway.normalise)
                owner.append(position)
        return (*device_batch(setup, items), {"weights": weights, "normalise": normalise, "owner": owner})

    def _loss(self, chunk: tuple[dict[str, Any], Any, dict[str, Any]]) -> Any:
        batch, labels, layout = chunk
        nll, counts = token_nll(forward_logits(self.setup, batch), labels)
        return pathway_loss(nll, counts, layout["weights"], layout["normalise"], layout["owner"],
                            max(layout["owner"]) + 1)

    def __call__(self, batch: Sequence[tuple[int, int]], step: int) -> dict[str, float]:
        """Train on this worker's share of global batch `batch` ((example index, epoch) pairs)."""
        share = worker_share(batch, self.setup.ctx.rank, self.setup.ctx.world)
        chunks = [self._chunk(share[start:start + self.micro], step) for start in range(0, len(share), self.micro)]
        return {"loss": optimizer_step(self.setup, chunks, self._loss)}

    def close(self) -> None:
        """Nothing to free."""
