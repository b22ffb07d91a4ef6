"""The model's own pooled features, extracted in batches on Ray Data and cached.

Two features per image, both from one forward pass over the direct classification prompt:
  vision  the mean of the vision tower's projected tokens, as they enter the language model (the
          input embeddings at the image-token positions: what the model "sees", family-independent)
  answer  the language model's last hidden state at the answer position (the last prompt token)
The model (and adapter) is loaded as the `hf` engine loads it. Features are cached under
$REASONBED_CACHE/features/ by (model path, adapter weights, dataset, domain, image ids, prompt,
version) as .npz files (no pickles), so a rerun or a second report reads them back.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from reasonbed import storage
from reasonbed.evaluation.plan import ResolvedModel
from reasonbed.evaluation.sampling import Item
from reasonbed.inference.base import build_engine
from reasonbed.models.encoding import build_chat_prompt

log = logging.getLogger(__name__)
FEATURE_VERSION = 1
FEATURE_KINDS = ("vision", "answer")


def pooled_features(model: Any, processor: Any, images: Sequence[Any], prompt: str) -> dict[str, np.ndarray]:
    """{"vision": [n, d], "answer": [n, d]} float32 features of `images` under `prompt`."""
    import torch

    processor.tokenizer.padding_side = "left"  # the last position is every row's answer position
    text = build_chat_prompt(processor, prompt)
    device = next(model.parameters()).device
    inputs = processor(text=[text] * len(images), images=list(images), return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True)
    mask = (inputs["input_ids"] == model.config.image_token_id).unsqueeze(-1).to(output.hidden_states[0].dtype)
    vision = (output.hidden_states[0] * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    answer = output.hidden_states[-1][:, -1]
    return {"vision": vision.float().cpu().numpy(), "answer": answer.float().cpu().numpy()}


class FeatureActor:
    """A Ray Data actor holding the model (transformers, with the adapter): image rows -> features."""

    def __init__(self, model: ResolvedModel, prompt: str, data_root: str, storage_options: dict[str, Any],
                 batch_size: int) -> None:
        import reasonbed  # noqa: F401 - installs the torchvision fix in this actor too

        self.engine = build_engine(replace(model.engine, name="hf"))
        self.prompt, self.batch_size = prompt, batch_size
        self.fs, self.base = storage.filesystem(data_root, storage_options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        paths = [f"{self.base}/{path}" for path in batch["path"]]
        blobs = self.fs.cat(paths)
        images = [Image.open(io.BytesIO(blobs[path])).convert("RGB") for path in paths]
        parts = [pooled_features(self.engine.model, self.engine.processor, images[i:i + self.batch_size],
                                 self.prompt) for i in range(0, len(images), self.batch_size)]
        return {"id": batch["id"], **{kind: np.concatenate([part[kind] for part in parts]) for kind in FEATURE_KINDS}}


def cache_path(model: ResolvedModel, dataset: str, domain: str, items: Sequence[Item], prompt: str) -> Path:
    ids = hashlib.sha256("\n".join(sorted(item.id for item in items)).encode()).hexdigest()
    key = {"path": model.model.path, "family": model.model.family, "dtype": model.model.dtype,
           "adapter": model.adapter_digest, "dataset": dataset, "domain": domain, "ids": ids, "prompt": prompt,
           "version": FEATURE_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return storage.cache_dir() / "features" / f"{dataset}-{domain}-{digest}.npz"


def domain_features(model: ResolvedModel, dataset: str, items_by_domain: dict[str, list[Item]], prompt: str,
                    data_root: str, storage_options: dict[str, Any], batch_size: int) -> tuple[dict[str, dict], float]:
    """Per domain {"ids", "labels", "vision", "answer"}, read from the cache or extracted on Ray; and the
    seconds spent extracting (0 when everything was cached)."""
    import ray.data

    found: dict[str, dict[str, np.ndarray]] = {}
    missing: list[Item] = []
    for domain, items in items_by_domain.items():
        path = cache_path(model, dataset, domain, items, prompt)
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                found[domain] = {name: data[name] for name in data.files}
        else:
            missing.extend(items)
    if not missing:
        return found, 0.0
    started = time.perf_counter()
    rows = [{"id": item.id, "path": item.path} for item in missing]
    dataset_rows = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // (4 * batch_size), 50)))
    dataset_rows = dataset_rows.map_batches(
        FeatureActor, fn_constructor_kwargs={"model": model, "prompt": prompt, "data_root": data_root,
                                             "storage_options": storage_options, "batch_size": batch_size},
        batch_size=4 * batch_size, compute=ray.data.ActorPoolStrategy(size=model.engine.actors),
        batch_format="numpy", **model.engine.actor_options())
    by_id: dict[str, dict[str, np.ndarray]] = {}
    for batch in dataset_rows.iter_batches(batch_size=None, batch_format="numpy"):
        for index, image_id in enumerate(batch["id"]):
            by_id[str(image_id)] = {kind: np.asarray(batch[kind][index]) for kind in FEATURE_KINDS}
    seconds = time.perf_counter() - started
    for domain, items in items_by_domain.items():
        if domain in found:
            continue
        ordered = sorted(items, key=lambda item: item.id)
        found[domain] = {"ids": np.array([item.id for item in ordered]),
                         "labels": np.array([item.label for item in ordered], dtype=np.int64),
                         **{kind: np.stack([by_id[item.id][kind] for item in ordered]) for kind in FEATURE_KINDS}}
        path = cache_path(model, dataset, domain, items, prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # concurrent writers: the last rename wins
        np.savez(temporary, **found[domain])
        temporary.replace(path)
    log.info("%s: features of %d images extracted in %.1f s", model.name, len(missing), seconds)
    return found, seconds
