"""The pretraining recipe of the offline tiny models: what they learn before any DG method touches them.

Real MLLMs arrive pretrained; a random tiny model learns nothing within a CPU budget, so no test could
tell a correct method from a broken one. The factory (`reasonbed.models.tiny`) therefore trains ALL
weights of a freshly built tiny model on the generated corpus of `reasonbed.models.corpus` (images
disjoint from the benchmarks' and richer than them), in two stages, as real MLLMs are built:

1. vision: the vision encoder learns to tell shape, digit, colour, count and style apart, through
   throw-away linear heads on its pooled output (a ViT trained from scratch learns far faster from
   labels than through a language model: CLIP/SigLIP-style supervision, cheap because no text runs);
2. image-text: the whole model learns the corpus' texts through the family's chat template, encoded
   exactly as training and evaluation encode them (`reasonbed.models.encoding`; loss on the answer
   tokens only, from the answer positions' logits only: `answer_loss`): captions, questions about one
   attribute, RD-MLDG's classification prompt over varied option lists answered with one option, and
   short five-tag chains answering the reasoning prompt, true for the image.

So the model sees shapes and digits in 56-pixel images, speaks about them, picks from the options it
is given and writes well-formed chains, before any fine-tuning.

Calibration (measured in docs/training.md, "The tiny world"): the base model must see and speak, yet leave
fine-tuning room on every domain, as a real MLLM does. Two knobs of the corpus do it: the image-text stage
shows crosses and triangles ten times less often than other shapes (`CorpusSpec.text_rarity`: the long tail
of web image-text data), and painting and photo images are drawn 1.5 times as often as other styles (they
are the hardest to see). The default recipe gives the qwen2_vl `tiny` model a zero-shot accuracy of 0.42 on
synthetic_shapes (cartoon 0.54, painting 0.28, photo 0.42, sketch 0.46; chance 0.17) and 0.49 on
rotated_digits (0.35 upright to 0.58 at 60 degrees; chance 0.10), and valid five-tag chains in 81% (shapes)
and 100% (digits) of greedy reasoning-prompt completions. It runs in two data-parallel processes
(`PretrainRecipe.processes`, `reasonbed.models.replicas`): 144 and 154 s against 202 and 164 s in one process,
in two side-by-side runs on 2 cores (`jobs/bench_pretrain.py`; docs/benchmarks.md), for about a third more CPU; one
process took 183 to 317 s on the machines of docs/training.md, "The tiny world" (the commands, the versions).
`in_one_process` replays the two processes in one: the same bytes, for the CPU and wall time of one process (the
test suite's build, beside tests that keep both cores busy).
Everything is deterministic for a seed (corpus, order, initialisation; torch runs on a fixed
number of threads in a fixed number of processes), and every field of `PretrainRecipe` enters the factory's cache hash.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reasonbed.models.corpus import (
    ATTRIBUTES,
    CorpusSpec,
    attribute_labels,
    example_text,
    option_pools,
    render_image,
    sample_attributes,
    text_weights,
)
from reasonbed.models.encoding import CorpusEncoder, collate
from reasonbed.models.replicas import Replicas, join_replicas, spawn_replicas

RECIPE_VERSION = 3  # 2: the image-text loss from the answer positions' logits only; 3: data-parallel processes

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PretrainRecipe:
    """Corpus and optimisation of the pretraining; every field enters the factory's cache hash."""

    corpus: CorpusSpec = field(default_factory=CorpusSpec)  # what the corpus draws (images, texts)
    vision_steps: int = 1500  # stage 1: steps training the vision encoder on attribute labels
    vision_batch_size: int = 64  # stage 1: images per step
    vision_lr: float = 2e-3  # stage 1: peak AdamW learning rate (warmup, then cosine decay)
    steps: int = 800  # stage 2: image-text steps training all weights
    batch_size: int = 32  # stage 2: examples per step, all of one kind of text (little padding)
    chain_batch_size: int = 16  # stage 2: examples per chain step (a chain example is ~3x longer than others)
    lr: float = 1e-3  # stage 2: peak AdamW learning rate (warmup, then cosine decay)
    vision_lr_scale: float = 0.1  # stage 2: the vision encoder's learning rate, relative to lr
    warmup_steps: int = 50  # linear warmup steps of each stage
    weight_decay: float = 0.01  # AdamW weight decay (matrices only)
    max_grad_norm: float = 1.0  # gradient clipping
    # torch threads of each process while pretraining; fixed, since the bytes of a build depend on it. One: two
    # threads are only ~20% faster on 2 idle cores and several times slower when another process competes for them.
    threads: int = 1
    # data-parallel processes (`reasonbed.models.replicas`), each on its share of every batch: two use both cores
    # of a 2-core machine (half a batch takes 53-60% of a whole one's time). The bytes depend on it.
    processes: int = 2
    version: int = RECIPE_VERSION  # bumped when the recipe's code changes what it builds

    def __post_init__(self) -> None:
        counts = (self.vision_steps, self.steps, self.warmup_steps)
        sizes = (self.vision_batch_size, self.batch_size, self.chain_batch_size, self.threads, self.processes)
        if min(counts) < 0 or min(sizes) < 1:
            raise ValueError(f"pretrain recipe: vision_steps, steps, warmup_steps ({counts}) must be >= 0, "
                             f"batch sizes, threads and processes {sizes} >= 1")
        if self.lr <= 0 or self.vision_lr <= 0 or self.vision_lr_scale < 0:
            raise ValueError(f"pretrain recipe: lr ({self.lr}) and vision_lr ({self.vision_lr}) must be > 0, "
                             f"vision_lr_scale ({self.vision_lr_scale}) >= 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def text_schedule(recipe: PretrainRecipe, attributes: list[dict[str, Any]], seed: int
                  ) -> list[list[tuple[int, str, str]]]:
    """Every image-text step's batch: (image index, prompt, target) of one kind of text, drawn from the seed."""
    spec = recipe.corpus
    pools = option_pools(spec, seed)
    kinds = [kind for kind, _ in spec.kind_weights]
    weights = [weight for _, weight in spec.kind_weights]
    rng = random.Random(f"corpus/{seed}/schedule")
    cumulative = list(itertools.accumulate(text_weights(spec, attributes)))
    steps = []
    for _ in range(recipe.steps):
        kind = rng.choices(kinds, weights)[0]
        size = recipe.chain_batch_size if kind == "chain" else recipe.batch_size
        chosen = rng.choices(range(len(attributes)), cum_weights=cumulative, k=size)
        steps.append([(index, *example_text(kind, attributes[index], pools, rng)) for index in chosen])
    return steps


def image_features(model: Any, vision: Sequence[dict[str, Any]]) -> Any:
    """The vision encoder's output tokens of each image (its vision tensors), mean-pooled to one vector."""
    import torch

    output = model.get_image_features(**{key: torch.cat([item[key] for item in vision]) for key in vision[0]})
    pooled = getattr(output, "pooler_output", None)
    features = pooled if pooled is not None else output.last_hidden_state
    if isinstance(features, (list, tuple)):
        return torch.stack([part.reshape(-1, part.shape[-1]).mean(0) for part in features])
    return features.reshape(len(vision), -1, features.shape[-1]).mean(1)


class _Reporter:
    """A progress line every `every` seconds and at a stage's last step: step/total, loss, elapsed, eta."""

    def __init__(self, name: str, stage: str, total: int, started: float, progress: Progress, every: float) -> None:
        self.name, self.stage, self.total, self.started = name, stage, total, started
        self.progress, self.every = progress, every
        self.stage_started = self.last = time.perf_counter()
        self.window: list[float] = []
        self.final: float | None = None

    def step(self, step: int, loss: float) -> None:
        self.window.append(loss)
        now = time.perf_counter()
        if now - self.last >= self.every or step == self.total:
            eta = (now - self.stage_started) / step * (self.total - step)
            self.final = sum(self.window) / len(self.window)
            self.progress(f"pretraining {self.name}: {self.stage} step {step}/{self.total} loss {self.final:.3f} "
                          f"elapsed {now - self.started:.0f}s eta {eta:.0f}s")
            self.last, self.window = now, []

    def final_loss(self) -> float | None:
        """The mean loss of the last reported window (None when the stage had no steps)."""
        return None if self.final is None else round(self.final, 4)


def vision_parameters(model: Any, encoder: CorpusEncoder) -> set[int]:
    """The ids of the parameters an image's features depend on (vision encoder and projector)."""
    model.zero_grad(set_to_none=True)
    image_features(model, encoder.vision[:1]).sum().backward()
    found = {id(parameter) for parameter in model.parameters() if parameter.grad is not None}
    model.zero_grad(set_to_none=True)
    return found


def _optimizer(model: Any, extra: Sequence[Any], lr: float, recipe: PretrainRecipe, steps: int,
               scaled: set[int] = frozenset(), scale: float = 1.0) -> tuple[Any, Any]:
    """AdamW (decay on matrices other than embeddings; parameters in `scaled` at lr x scale) and its schedule."""
    import torch
    from transformers import get_scheduler

    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, parameter in [*model.named_parameters(), *(("extra", p) for p in extra)]:
        key = (parameter.dim() >= 2 and "embed" not in name, id(parameter) in scaled)
        groups.setdefault(key, []).append(parameter)
    optimizer = torch.optim.AdamW([{"params": params, "weight_decay": recipe.weight_decay if decay else 0.0,
                                    "lr": lr * (scale if is_scaled else 1.0)}
                                   for (decay, is_scaled), params in sorted(groups.items())], lr=lr, betas=(0.9, 0.95),
                                  foreach=True)  # the per-tensor loop's bytes (checked), fewer Python calls per step
    return optimizer, get_scheduler("cosine", optimizer, num_warmup_steps=min(recipe.warmup_steps, steps),
                                    num_training_steps=max(steps, 1))


def _update(model: Any, extra: Sequence[Any], shares: Sequence[Any], loss_of: Callable[[Any], Any], optimizer: Any,
            scheduler: Any, clip: float, replicas: Replicas) -> float:
    """Each share this process computes: its loss (`loss_of`) and backward, autograd adding the gradients up; then
    the gradients summed over the replicas, clipping and one optimizer step; the whole batch's loss."""
    import torch

    total = None
    for share in shares:
        loss = loss_of(share)
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    parameters = [p for p in itertools.chain(model.parameters(), extra) if p.grad is not None]
    summed = replicas.sum_gradients(parameters, total)
    torch.nn.utils.clip_grad_norm_(parameters, clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return summed


def _vision_loss(model: Any, head: Any, encoder: CorpusEncoder, labels: Any, sizes: list[int], counts: list[int],
                 mine: list[int]) -> Any:
    """A share's part of the vision stage's loss: its attribute cross-entropies divided by the whole batch's counts."""
    import torch

    logits = head(image_features(model, [encoder.vision[i] for i in mine])).split(sizes, dim=-1)
    targets = labels[mine]
    return sum(torch.nn.functional.cross_entropy(part, targets[:, index], ignore_index=-100, reduction="sum")
               / counts[index] for index, part in enumerate(logits) if counts[index])


def train_vision(model: Any, encoder: CorpusEncoder, attributes: list[dict[str, Any]], recipe: PretrainRecipe,
                 seed: int, report: _Reporter, replicas: Replicas) -> Any:
    """Stage 1: the vision encoder on every image's attribute labels, through linear heads (returned, then dropped).

    The loss is the sum over attributes of the mean cross-entropy over the batch's labelled images; each replica
    sums its share's terms and divides them by the whole batch's counts.
    """
    import torch

    labels = torch.tensor([attribute_labels(attrs) for attrs in attributes])
    sizes = [len(names) for names in ATTRIBUTES.values()]
    hidden = image_features(model, encoder.vision[:1]).shape[-1]
    head = torch.nn.Linear(hidden, sum(sizes))
    optimizer, scheduler = _optimizer(model, list(head.parameters()), recipe.vision_lr, recipe, recipe.vision_steps)
    rng = random.Random(f"corpus/{seed}/vision")
    for step in range(1, recipe.vision_steps + 1):
        chosen = [rng.randrange(len(attributes)) for _ in range(recipe.vision_batch_size)]
        counts = (labels[chosen] != -100).sum(dim=0).tolist()  # labelled images per attribute, whole batch
        loss_of = functools.partial(_vision_loss, model, head, encoder, labels, sizes, counts)
        report.step(step, _update(model, list(head.parameters()), replicas.shares(chosen), loss_of, optimizer,
                                  scheduler, recipe.max_grad_norm, replicas))
    return head


def train_text(model: Any, encoder: CorpusEncoder, batches: list[list[tuple[int, str, str]]],
               recipe: PretrainRecipe, report: _Reporter, replicas: Replicas) -> None:
    """Stage 2: all weights on the image-text examples (loss on the answer tokens only; each replica divides its
    share's summed loss by the whole batch's count of answer tokens)."""
    pad = encoder.processor.tokenizer.pad_token_id
    optimizer, scheduler = _optimizer(model, [], recipe.lr, recipe, recipe.steps, vision_parameters(model, encoder),
                                      recipe.vision_lr_scale)
    for step, batch in enumerate(batches, start=1):
        parts = []  # (tensors, labels) of each share this process computes
        for share in replicas.shares(batch):
            tensors = collate([encoder.item(*example) for example in share], pad)
            parts.append((tensors, tensors.pop("labels")))
        count = replicas.total(sum((labels[:, 1:] != -100).sum() for _, labels in parts))
        loss_of = functools.partial(_answer_loss_of_part, model, count)
        report.step(step, _update(model, [], parts, loss_of, optimizer, scheduler, recipe.max_grad_norm, replicas))


def _answer_loss_of_part(model: Any, count: Any, part: tuple[dict[str, Any], Any]) -> Any:
    return answer_loss(model, part[0], part[1], count)


def answer_loss(model: Any, tensors: dict[str, Any], labels: Any, count: Any) -> Any:
    """The next-token cross-entropy summed over the labelled tokens and divided by `count`, computed from the
    logits of the positions that predict a labelled token in some row only (`logits_to_keep`): with `count` the
    batch's labelled tokens, transformers' causal-LM loss; with a whole batch's count, a share's part of it.

    A prompt is several times longer than its answer, so the output head and its softmax, over the whole
    vocabulary, then run on a fraction of the positions: the image-text stage took 13 to 29% less time in
    side-by-side builds (docs/training.md).
    """
    import torch

    targets = labels[:, 1:]
    positions = (targets != -100).any(dim=0).nonzero().squeeze(1)
    logits = model(**tensors, logits_to_keep=positions).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             targets[:, positions].reshape(-1), ignore_index=-100,
                                             reduction="sum") / count


def _set_threads(count: int) -> None:
    """Set torch's intra-op threads to `count`, and check it: the bytes of a build depend on the count.

    Through torch's own binding (`torch._C.set_num_threads`): vLLM's CPU worker replaces `torch.set_num_threads`
    with a no-op in a process that has started an engine, so a build there would run on every core and write
    other bytes than a fresh machine's build of the same recipe (whose hash names the cache entry).
    """
    import torch

    torch._C.set_num_threads(count)
    if torch.get_num_threads() != count:
        raise RuntimeError(f"pretraining needs {count} torch thread(s) for reproducible bytes; "
                           f"torch runs {torch.get_num_threads()}")


def pretrain(model: Any, processor: Any, recipe: PretrainRecipe, seed: int, name: str = "tiny model",
             progress: Progress = stderr_progress, every: float = 5.0, in_one_process: bool = False) -> dict[str, Any]:
    """Pretrain all of `model`'s weights by `recipe` (deterministic for `seed`) in `recipe.processes` data-parallel
    processes, this one and spawned helpers, or, `in_one_process`, replaying them all in this one (the same bytes;
    `reasonbed.models.replicas`); returns what it measured.

    Progress lines (stage, step/total, loss, elapsed, eta) go to `progress` every `every` seconds.
    """
    import torch
    from safetensors.torch import save

    started = time.perf_counter()
    threads = torch.get_num_threads()
    _set_threads(recipe.threads)
    try:
        if in_one_process:
            context: Any = contextlib.nullcontext(Replicas.replayed(recipe.processes))
        else:
            helper_args = () if recipe.processes == 1 else (  # what a helper builds its replica from
                type(model), model.config, save({key: value.contiguous() for key, value in model.state_dict().items()}),
                processor, recipe, seed)
            context = spawn_replicas(recipe.processes, _helper_replica, helper_args)
        with context as replicas:
            measured = _train_replica(model, processor, recipe, seed, replicas, name, progress, every, started)
    finally:
        torch._C.set_num_threads(threads)  # unchecked: an error of the build itself is not masked here
    return {"seconds": round(time.perf_counter() - started, 1), "processes": recipe.processes,
            "in_one_process": in_one_process, **measured}


def _helper_replica(store_path: str, rank: int, world: int, model_class: Any, config: Any, weights: bytes,
                    processor: Any, recipe: PretrainRecipe, seed: int) -> None:
    """A spawned helper's side of `pretrain`: the same model and steps on its share of every batch, silently."""
    from safetensors.torch import load

    _set_threads(recipe.threads)
    model = model_class(config)
    model.load_state_dict(load(weights))
    replicas = join_replicas(store_path, rank, world)
    _train_replica(model, processor, recipe, seed, replicas, f"replica {rank}", lambda line: None, 1e9,
                   time.perf_counter())


def render_corpus(attributes: list[dict[str, Any]], seed: int, size: int, replicas: Replicas) -> list[Any]:
    """Every corpus image; each replica draws its share and the replicas exchange the pixels (the same images)."""
    import numpy as np
    import torch
    from PIL import Image

    def draw(indices: list[int]) -> Any:
        return torch.from_numpy(np.stack([np.asarray(render_image(attributes[index], index, seed, size).convert("RGB"))
                                          for index in indices]))

    return [Image.fromarray(row.numpy()) for row in replicas.gather_rows(len(attributes), draw)]


def _train_replica(model: Any, processor: Any, recipe: PretrainRecipe, seed: int, replicas: Replicas, name: str,
                   progress: Progress, every: float, started: float) -> dict[str, Any]:
    """One replica's pretraining: the corpus (each replica encodes all of it), then both stages."""
    import torch

    attributes = sample_attributes(recipe.corpus, seed)
    images = render_corpus(attributes, seed, recipe.corpus.image_size, replicas)
    encoder = CorpusEncoder(processor, images)
    batches = text_schedule(recipe, attributes, seed)
    for batch in batches:  # every distinct prompt and target through the processor once, up front
        for _index, prompt, target in batch:
            encoder.prompt(prompt), encoder.target(target)
    progress(f"pretraining {name}: {len(images)} corpus images, {len(encoder.prompts)} prompts, "
             f"{len(encoder.targets)} targets encoded in {time.perf_counter() - started:.0f}s, {replicas.world} "
             f"{'replicas replayed in one process' if len(replicas.ranks) > 1 else 'process(es)'}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        vision = _Reporter(name, "vision", recipe.vision_steps, started, progress, every)
        train_vision(model, encoder, attributes, recipe, seed, vision, replicas)
        text = _Reporter(name, "image-text", recipe.steps, started, progress, every)
        train_text(model, encoder, batches, recipe, text, replicas)
        model.eval()
    replicas.check_identical(list(model.parameters()))
    return {"images": len(images), "prompts": len(encoder.prompts), "vision_loss": vision.final_loss(),
            "text_loss": text.final_loss()}
