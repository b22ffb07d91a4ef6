"""The evaluation plan: resolved models, the dataset's items with their nuisance value, and one row
per (query, prompt, condition, k) grouped into resumable shards.

Shards are named `<model key>/<prompt>/<condition>-k<k>/<domain>/part-<n>` (the generation
pipeline's `plan_shards`), where the model key is the model's name plus a hash of everything its
answers depend on (model path, adapter weights, engine, token limits, seed, data), so a rerun with
the same config skips complete shards and a changed config never reuses stale ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reasonbed.config import ConfigError
from reasonbed.data.reader import ImageCheck, check_images, scan
from reasonbed.data.specs import DatasetSpec
from reasonbed.evaluation.adapters import (
    adapter_digest,
    check_adapter,
    resolve_adapter,
    with_trained_image_bounds,
)
from reasonbed.evaluation.config import ZERO_SHOT, EvalConfig, EvalModel
from reasonbed.evaluation.sampling import Episode, Item, Sampler, Unavailable
from reasonbed.generation.shards import Shard, plan_shards
from reasonbed.inference.base import EngineConfig, engine_weights, warn_served_image_bounds
from reasonbed.models.configs import ModelConfig
from reasonbed.prompts import PROMPT_VERSION

log = logging.getLogger(__name__)
# Datasets whose metadata.jsonl gives a per-image nuisance attribute for the spurious condition;
# any other dataset uses the domain itself as the nuisance.
NUISANCE_ATTRIBUTES = {"synthetic_shapes": "colour"}


@dataclass
class ResolvedModel:
    """A model of the comparison, ready to run: its name, key, base model, adapter and engine config."""

    name: str
    key: str  # name + hash of what its answers depend on: the shard prefix
    model: ModelConfig  # with the path resolved (a local dir or a hub id)
    adapter: str  # the adapter directory, "" for none
    adapter_digest: str  # hash of the adapter's weights, "" for none
    engine: EngineConfig  # cfg.engine with this model, adapter and images_per_prompt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "model"


def default_name(entry: EvalModel, path: str, adapter: str) -> str:
    base = Path(path.rstrip("/")).name if entry.model.path else f"tiny-{entry.model.family}"
    if not adapter:
        return base
    run = Path(adapter).parent.name if Path(adapter).name == "adapter" else Path(adapter).name
    return f"{base}+{run}"


def resolve_models(cfg: EvalConfig) -> list[ResolvedModel]:
    """Resolve every model's path and adapter and check each adapter against its base (errors name them)."""
    from reasonbed.models.loading import resolve_model

    resolved = []
    for entry in cfg.models:
        if engine_weights(cfg.engine.name) != "local":  # behind an endpoint, or no model: nothing local to resolve
            path, model = cfg.engine.served_model or entry.model.path, entry.model
        else:
            model = resolve_model(entry.model)  # the tiny model built, the family detected
            path = model.path
        adapter = resolve_adapter(entry.adapter) if entry.adapter else ""
        if adapter:
            check_adapter(adapter, model, path)
        model = with_trained_image_bounds(model, adapter)
        warn_served_image_bounds(cfg.engine.name, model)
        digest = adapter_digest(adapter) if adapter else ""
        name = entry.name or default_name(entry, path, adapter)
        depends = {"path": path, "family": model.family, "dtype": model.dtype, "adapter": digest,
                   "engine": cfg.engine.name, "served_model": cfg.engine.served_model,
                   "max_tokens": [cfg.max_tokens_direct, cfg.max_tokens_reasoning], "seed": cfg.seed,
                   "data": [cfg.data.dataset, cfg.data.root, cfg.data.images_per_class, cfg.data.image_size,
                            cfg.data.palette], "prompt_version": PROMPT_VERSION}
        if model.pixel_bounds():  # (not in the key otherwise: earlier keys stay valid)
            depends["image_pixels"] = [model.min_image_pixels, model.max_image_pixels]
        key = f"{_slug(name)}-{hashlib.sha1(json.dumps(depends, sort_keys=True).encode()).hexdigest()[:8]}"
        engine = replace(cfg.engine, model=model, lora_path=adapter, images_per_prompt=cfg.images_per_prompt)
        resolved.append(ResolvedModel(name, key, model, adapter, digest, engine))
    names = [model.name for model in resolved]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"models: name {duplicated[0]!r} is used twice; give each model a distinct name")
    return resolved


def load_items(spec: DatasetSpec, root: str, storage_options: dict[str, Any], on_corrupt: str = "error"
               ) -> tuple[list[Item], str, ImageCheck]:
    """Every image of the dataset that decodes as an Item with its nuisance value; the nuisance's name; the image
    check (`data.on_corrupt`: a corrupt image raises DatasetError naming it, or is skipped and counted)."""
    checked = check_images(spec, root, scan(spec, root, None, storage_options), storage_options, on_corrupt)
    index = checked.rows
    attribute = NUISANCE_ATTRIBUTES.get(spec.name, "domain")
    if attribute == "domain":
        values = {row["path"]: row["domain"] for row in index}
    else:
        from reasonbed.data.synthetic import read_metadata

        metadata = read_metadata(root, storage_options)
        values = {row["path"]: str(metadata.get(row["path"], {}).get(attribute, "")) for row in index}
    items = [Item(str(row["id"]), str(row["path"]), str(row["domain"]), int(row["label"]), values[row["path"]])
             for row in index]
    return items, attribute, checked


def _row(episode: Episode, prompt: str, spec: DatasetSpec) -> dict[str, Any]:
    query = episode.query
    examples = [{"id": item.id, "path": item.path, "domain": item.domain, "label": item.label, "shown": shown,
                 "nuisance": item.nuisance} for item, shown in zip(episode.examples, episode.shown, strict=True)]
    return {"id": query.id, "image_id": query.id, "path": query.path, "domain": query.domain,
            "label": query.label, "class_name": spec.classes[query.label], "nuisance": query.nuisance,
            "prompt": prompt, "condition": episode.condition, "k": episode.k, "cue_label": episode.cue_label,
            "examples": json.dumps(examples)}


def plan_rows(cfg: EvalConfig, spec: DatasetSpec, sampler: Sampler) -> tuple[list[dict[str, Any]],
                                                                              dict[str, int]]:
    """One row per (query, prompt, condition, k) of the query domains; and skipped episodes per reason."""
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for domain in cfg.domains or spec.domains:
        spec.check_domain(domain)
        for query in sampler.queries(domain, cfg.queries_per_domain):
            episodes = [Episode(ZERO_SHOT, 0, query)]
            if "knowledge" in cfg.conditions:
                episodes.append(Episode("knowledge", 0, query))
            for condition in cfg.icl_conditions:
                for k in cfg.icl_shots:
                    try:
                        episodes.append(sampler.episode(condition, k, query))
                    except Unavailable as reason:
                        key = f"{condition} k={k} in {domain}: {reason}"
                        skipped[key] = skipped.get(key, 0) + 1
            rows.extend(_row(episode, prompt, spec) for prompt in cfg.prompts for episode in episodes)
    return rows, skipped


def plan_model_shards(rows: list[dict[str, Any]], key: str, shard_size: int) -> list[Shard]:
    """The shards of one model: per (prompt, condition, k), then per domain in blocks of shard_size."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["prompt"], row["condition"], row["k"]), []).append(row)
    shards: list[Shard] = []
    for (prompt, condition, k), group in sorted(groups.items()):
        shards.extend(plan_shards(group, shard_size, f"{key}/{prompt}/{condition}-k{k}"))
    return shards
