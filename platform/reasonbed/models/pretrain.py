"""The pretraining recipe of the offline tiny models: what they learn before any DG method touches them.

Real MLLMs arrive pretrained; a random tiny model cannot learn anything within a CPU budget, so no
test could tell a correct method from a broken one. The factory (`reasonbed.models.tiny`) therefore
trains ALL weights of a freshly built tiny model on the generated corpus of `reasonbed.models.corpus`
(images disjoint from the benchmarks', richer than them, and texts through the family's chat template
exactly as training and evaluation encode them: loss on the answer tokens only).

What the model learns: to see shape, colour, count and style and digits in 56-pixel images; to
caption them and answer questions about them; to answer RD-MLDG's classification prompt with one
option of whatever option list it is given; and to write five-tag chains in the format of the
reasoning prompt, true for the image, ending in one option.

Calibration (why the corpus looks the way it does): CALIBRATION_NOTES
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from reasonbed.models.corpus import CorpusSpec, example_text, option_pools, render_image, sample_attributes
from reasonbed.models.loading import build_chat_prompt

RECIPE_VERSION = 1
TOKEN_KEYS = ("input_ids", "attention_mask", "labels")


@dataclass(frozen=True)
class PretrainRecipe:
    """Corpus and optimisation of the pretraining; every field enters the factory's cache hash."""

    corpus: CorpusSpec = field(default_factory=CorpusSpec)  # what the corpus draws (images, texts)
    steps: int = 1500  # optimizer steps
    batch_size: int = 32  # examples per step, all of one kind of text (so padding stays small)
    lr: float = 2e-3  # peak AdamW learning rate (linear warmup, then cosine decay to 0)
    warmup_steps: int = 100  # steps of linear warmup
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    threads: int = 2  # torch threads while training (fixed: the same bytes on every machine)
    version: int = RECIPE_VERSION  # bumped when the recipe's code changes what it builds

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.threads < 1 or self.warmup_steps < 0:
            raise ValueError(f"pretrain recipe: steps ({self.steps}), batch_size ({self.batch_size}), lr "
                             f"({self.lr}) and threads ({self.threads}) must be positive, warmup_steps >= 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _vision_item(encoded: dict[str, Any], token_count: int) -> dict[str, Any]:
    """The per-image tensors of a processor output (everything not aligned with the tokens)."""
    return {key: value for key, value in encoded.items()
            if key not in TOKEN_KEYS and not (value.dim() == 2 and value.shape[1] == token_count)}


class CorpusEncoder:
    """Pre-encodes the corpus once: each image's vision tensors, each distinct prompt and target's tokens.

    A prompt's encoding depends on the image only through the image's size, which is the same for
    every corpus image, so each distinct prompt is run through the processor once (with any corpus
    image) and reused; `item()` then equals `reasonbed.train.batching.encode_pathway` on that example.
    """

    def __init__(self, processor: Any, images: list[Any]) -> None:
        sizes = {image.size for image in images}
        if len(sizes) != 1:
            raise ValueError(f"pretraining corpus: images must share one size, got {sorted(sizes)}")
        self.processor = processor
        self.reference = images[0]
        chat = build_chat_prompt(processor, "")
        self.vision = []
        for image in images:
            encoded = processor(text=[chat], images=[image], return_tensors="pt")
            self.vision.append(_vision_item(encoded, encoded["input_ids"].shape[1]))
        self.prompts: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, list[int]] = {}

    def _prompt(self, prompt: str) -> dict[str, Any]:
        if prompt not in self.prompts:
            chat = build_chat_prompt(self.processor, prompt)
            encoded = self.processor(text=[chat], images=[self.reference], return_tensors="pt")
            length = encoded["input_ids"].shape[1]
            self.prompts[prompt] = {key: value[0] for key, value in encoded.items()
                                    if key in TOKEN_KEYS or (value.dim() == 2 and value.shape[1] == length)}
        return self.prompts[prompt]

    def _target(self, target: str) -> list[int]:
        if target not in self.targets:
            tokenizer = self.processor.tokenizer
            self.targets[target] = tokenizer(target + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        return self.targets[target]

    def item(self, image_index: int, prompt: str, target: str) -> dict[str, Any]:
        """Unbatched tensors of one example: prompt (labels -100) + target + end token, and its image."""
        import torch

        encoded, target_ids = self._prompt(prompt), self._target(target)
        prompt_ids = encoded["input_ids"]
        tail = torch.tensor(target_ids, dtype=prompt_ids.dtype)
        item = {"input_ids": torch.cat([prompt_ids, tail]),
                "labels": torch.cat([torch.full_like(prompt_ids, -100), tail])}
        item["attention_mask"] = torch.ones_like(item["input_ids"])
        for key, value in encoded.items():
            if key not in TOKEN_KEYS:
                item[key] = torch.cat([value, torch.zeros(len(target_ids), dtype=value.dtype)])
        item.update(self.vision[image_index])
        return item


def schedule(recipe: PretrainRecipe, attributes: list[dict[str, Any]], seed: int) -> list[list[tuple[int, str, str]]]:
    """Every step's batch: (image index, prompt, target) of one kind of text, drawn from the seed."""
    spec = recipe.corpus
    pools = option_pools(spec, seed)
    kinds = [kind for kind, _ in spec.kind_weights]
    weights = [weight for _, weight in spec.kind_weights]
    rng = random.Random(f"corpus/{seed}/schedule")
    steps = []
    for _ in range(recipe.steps):
        kind = rng.choices(kinds, weights)[0]
        batch = []
        for _ in range(recipe.batch_size):
            index = rng.randrange(len(attributes))
            batch.append((index, *example_text(kind, attributes[index], pools, rng)))
        steps.append(batch)
    return steps


def pretrain(model: Any, processor: Any, recipe: PretrainRecipe, seed: int, name: str = "tiny model",
             progress: Callable[[str], None] = stderr_progress, every: float = 5.0) -> dict[str, Any]:
    """Train all of `model`'s weights on the corpus of `recipe` (deterministic for `seed`); returns stats.

    A progress line (step/total, loss, elapsed, eta) goes to `progress` every `every` seconds.
    """
    import torch
    from transformers import get_scheduler

    from reasonbed.train.batching import collate

    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        attributes = sample_attributes(recipe.corpus, seed)
        images = [render_image(attrs, index, seed, recipe.corpus.image_size) for index, attrs in enumerate(attributes)]
        progress(f"pretraining {name}: drew {len(images)} corpus images in {time.perf_counter() - started:.0f}s")
        encoder = CorpusEncoder(processor, images)
        batches = schedule(recipe, attributes, seed)
        for batch in batches:  # pre-encode every distinct prompt and target once
            for index, prompt, target in batch:
                encoder._prompt(prompt), encoder._target(target)
        progress(f"pretraining {name}: encoded {len(encoder.prompts)} prompts and {len(encoder.targets)} targets "
                 f"in {time.perf_counter() - started:.0f}s")
        pad = processor.tokenizer.pad_token_id
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.train()
            decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
            no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
            optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                           {"params": no_decay, "weight_decay": 0.0}],
                                          lr=recipe.lr, betas=(0.9, 0.95))
            scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=recipe.warmup_steps,
                                      num_training_steps=recipe.steps)
            train_started = last = time.perf_counter()
            window: list[float] = []
            for step, batch in enumerate(batches, start=1):
                tensors = collate([encoder.item(*example) for example in batch], pad)
                labels = tensors.pop("labels")
                loss = model(**tensors, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                window.append(float(loss.detach()))
                now = time.perf_counter()
                if now - last >= every or step == recipe.steps:
                    rate = (now - train_started) / step
                    progress(f"pretraining {name}: step {step}/{recipe.steps} loss {sum(window) / len(window):.3f} "
                             f"elapsed {now - started:.0f}s eta {rate * (recipe.steps - step):.0f}s")
                    last, final_loss, window = now, sum(window) / len(window), []
            model.eval()
    finally:
        torch.set_num_threads(threads)
    return {"seconds": round(time.perf_counter() - started, 1), "final_loss": round(final_loss, 4),
            "images": len(images), "prompts": len(encoder.prompts)}
