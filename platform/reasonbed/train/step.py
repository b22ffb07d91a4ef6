"""One supervised optimiser step over a worker's share of a global batch (Ray Train loop and plain benchmark loop).

The share is cut into micro-batches of `micro` images; each image gives the method's pathways (prompt, target,
weight), encoded with the processor and collated; the loss is the token NLL on target tokens only, combined per
image by `pathway_loss` and divided by `grad_accum`; gradients accumulate over the micro-batches, are clipped to
`max_grad_norm` and AdamW and the schedule step once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from reasonbed.train.data import ImageStore
from reasonbed.train.worker import autocast


def supervised_step(model: Any, processor: Any, method: Any, examples: Sequence[dict[str, Any]],
                    share: Sequence[tuple[int, int]], images: ImageStore, cfg: Any, device: Any, micro: int,
                    trainable: Sequence[Any], optimizer: Any, scheduler: Any) -> float:
    """Train on `share` ((example index, epoch) pairs); returns the step's loss (summed over micro-batches)."""
    import torch

    from reasonbed.train.batching import collate, decode_image, encode_pathway
    from reasonbed.train.losses import pathway_loss, token_nll

    pad = processor.tokenizer.pad_token_id
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
        with autocast(cfg.optim.precision, device):
            logits = model(**batch).logits
        nll, counts = token_nll(logits, labels)
        loss = pathway_loss(nll, counts, weights, normalise, owner, max(owner) + 1) / cfg.optim.grad_accum
        loss.backward()
        step_loss += float(loss.detach())
    if cfg.optim.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return step_loss
