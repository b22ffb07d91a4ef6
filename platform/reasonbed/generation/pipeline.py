"""The generation pipeline on Ray Data: images -> engine actor pool -> validated candidate rows.

Index rows (no bytes) become a Ray dataset; tasks (two per engine actor) load image bytes; a pool of
engine actors (`map_batches` with a callable class, `engine.actors` of them, see `reasonbed.generation.actors`)
writes `n` candidates per image and judges them; with an async engine (vLLM's, the default) each
actor holds `engine.batches_in_flight` batches in its engine at once. The driver gathers rows per
shard and writes each shard the moment all its images are in. Shards already complete are skipped,
so an interrupted run resumes where it stopped. An optional second pass revisits images with no kept
chain. The summary goes to the log and `manifest.json`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from reasonbed import storage
from reasonbed.config import to_dict
from reasonbed.data import catalog
from reasonbed.data.reader import check_images, load_images, scan
from reasonbed.data.specs import DatasetError, DatasetSpec
from reasonbed.generation.actors import AsyncGenerationActor, GenerationActor
from reasonbed.generation.config import GenerationConfig
from reasonbed.generation.schema import to_table
from reasonbed.generation.shards import Shard, ShardStore, plan_shards
from reasonbed.generation.summary import summarise
from reasonbed.inference.base import SamplingConfig, engine_secrets, engine_weights, runs_async

log = logging.getLogger(__name__)

# Image-loading tasks at once per engine actor. Loading a batch takes a fraction of the time an engine takes to
# answer it, so two keep every engine fed, and they leave the CPUs an engine actor needs to start. The bound also
# bounds what Ray Data asks the cluster autoscaler for: its requests carry CPU only (no `generation_node`), and
# while the engine actors start only the loaders have a rate, so it asks for twice their throughput every 10 s
# (24 loaders, 6 CPUs, on a 3-CPU cluster in a reproduction): nodes of any group with CPUs, an 8-GPU training
# node included (the likely cause of an intermittent failure of tests/test_placement.py).
LOADERS_PER_ACTOR = 2
LOADER_CPUS = 0.25  # CPU an image loader asks for (at most its engine's: see _run_pass)


def _run_pass(cfg: GenerationConfig, spec: DatasetSpec, root: str, store: ShardStore, shards: list[Shard],
              sampling: SamplingConfig, prompt_kind: str, pass_index: int, candidate_offset: int) -> int:
    """Generate the given shards; returns the number of shards written."""
    import ray.data

    if not shards:
        return 0
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards fill in order: resume loses little
    rows = [{**row, "shard": shard.name} for shard in shards for row in shard.rows]
    expected = {shard.name: shard.image_ids for shard in shards}
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // cfg.engine.batch_size, 200)))
    dataset = dataset.map_batches(
        load_images, fn_kwargs={"root": root, "storage_options": dict(cfg.data.storage_options), "verify": True},
        # a loader asks for no more CPU than its engine: an engine on its caller's CPU (num_cpus 0) takes them along
        batch_size=cfg.engine.batch_size, num_cpus=min(LOADER_CPUS, cfg.engine.num_cpus),
        compute=ray.data.TaskPoolStrategy(size=LOADERS_PER_ACTOR * cfg.engine.actors),
    )
    constructor = {"engine_cfg": cfg.engine, "sampling": sampling, "class_names": spec.display_names,
                   "data_root": root, "storage_options": dict(cfg.data.storage_options), "prompt_kind": prompt_kind,
                   "pass_index": pass_index, "candidate_offset": candidate_offset, "secrets": engine_secrets(cfg.engine)}
    if runs_async(cfg.engine):  # several Ray Data batches in each actor's engine at once
        actor, in_flight = AsyncGenerationActor, cfg.engine.batches_in_flight
        constructor["batches_in_flight"] = in_flight
    else:
        actor, in_flight = GenerationActor, 1
    dataset = dataset.map_batches(
        actor, fn_constructor_kwargs=constructor, batch_size=cfg.engine.batch_size,
        # max_concurrent_calls_per_actor: Ray Data tasks (blocks) running in one actor at once; an async
        # actor's calls share its event loop, and the actor's semaphore bounds the batches in its engine
        compute=ray.data.ActorPoolStrategy(size=cfg.engine.actors,
                                           max_concurrent_calls_per_actor=in_flight if in_flight > 1 else None),
        batch_format="numpy", **cfg.engine.actor_options(),
    )
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in expected}
    done: dict[str, set[str]] = {name: set() for name in expected}  # images with all their rows in
    counts: dict[str, int] = {}
    written, started = 0, time.perf_counter()
    for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        for row in batch.to_dict(orient="records"):
            if row.get("error") and cfg.on_bad_image == "error":
                raise DatasetError(f"image {row['path']!r} cannot be read: {row['error']} "
                                   f"(on_bad_image=error; {written} shard(s) already written are kept)")
            name, image_id = row.pop("shard"), row["image_id"]
            pending[name].append(row)
            counts[image_id] = counts.get(image_id, 0) + 1
            if counts[image_id] == (1 if row["candidate"] < 0 else sampling.n):
                done[name].add(image_id)
            if done[name] == expected[name]:
                store.write_shard(name, to_table(pending.pop(name)))
                done[name] = set()
                written += 1
                elapsed = time.perf_counter() - started
                log.info("shard %d/%d written: %s (%.0f s elapsed, ~%.0f s left)", written, len(shards), name,
                         elapsed, elapsed / written * (len(shards) - written))
    missing = sorted(pending)
    if missing:
        raise RuntimeError(f"generation ended with incomplete shards: {missing[:5]}")
    return written


def run_generation(cfg: GenerationConfig, image_ids: set[str] | None = None) -> dict[str, Any]:
    """Generate (or finish generating) chains for the configured data; returns the summary.

    `image_ids` restricts generation to those images (SARR: the training split only).
    """
    from reasonbed.ray_runtime import init_ray

    spec, root = catalog.resolve(cfg.data)
    if engine_weights(cfg.engine.name) == "local":  # fail here, naming the path, not inside an actor
        from dataclasses import replace

        from reasonbed.models.loading import resolve_model

        cfg = replace(cfg, engine=replace(cfg.engine, model=resolve_model(cfg.engine.model)))
    store = ShardStore(cfg.output, cfg.output_storage_options)
    store.check_writable()
    checked = check_images(spec, root, scan(spec, root, cfg.domains or None, cfg.data.storage_options),
                           cfg.data.storage_options, cfg.data.on_corrupt)  # corrupt images: stop now, or skip
    index = checked.rows
    if image_ids is not None:
        index = [row for row in index if row["id"] in image_ids]
    init_ray(address=cfg.ray_address or None)
    started = time.perf_counter()
    shards = plan_shards(index, cfg.shard_size, "pass0")
    todo = [shard for shard in shards if not store.is_complete(shard)]
    log.info("%s: %d images, %d shards, %d already complete, %d to generate", spec.name, len(index), len(shards),
             len(shards) - len(todo), len(todo))
    _run_pass(cfg, spec, root, store, todo, cfg.sampling, "blind", 0, 0)
    if cfg.second_pass != "none":
        first = store.read("pass0/", columns=["image_id", "kept", "candidate"])
        kept_ids = {i for i, k in zip(first.column("image_id").to_pylist(), first.column("kept").to_pylist(),
                                      strict=True) if k}
        unreadable = {i for i, c in zip(first.column("image_id").to_pylist(), first.column("candidate").to_pylist(),
                                        strict=True) if c < 0}
        retry = [row for row in index if row["id"] not in kept_ids and row["id"] not in unreadable]
        second = plan_shards(retry, cfg.shard_size, "pass1")
        todo = [shard for shard in second if not store.is_complete(shard)]
        log.info("second pass (%s): %d images with no kept chain, %d shards to generate", cfg.second_pass,
                 len(retry), len(todo))
        sampling = SamplingConfig(n=cfg.second_pass_n, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                                  max_tokens=cfg.sampling.max_tokens, seed=cfg.sampling.seed + 1)
        kind = "rationalization" if cfg.second_pass == "rationalize" else "blind"
        _run_pass(cfg, spec, root, store, todo, sampling, kind, 1, cfg.sampling.n)
    table = store.read()
    summary = {**summarise(table, len(index), time.perf_counter() - started), "skipped_inputs": checked.record()}
    manifest = {
        "dataset": spec.name, "data_root": root, "images": len(index), "shards": store.list_shards(),
        "config": redacted_config(cfg), "summary": summary,
    }
    store.write_manifest(manifest)
    log.info("summary: %s", summary)
    if cfg.tracking.enabled:
        _track(cfg, spec.name, manifest)
    return summary


def _track(cfg: GenerationConfig, dataset: str, manifest: dict[str, Any]) -> None:
    """Log the generation run to MLflow / W&B: its config, the summary's numbers and the manifest."""
    import json
    import tempfile
    from pathlib import Path

    from reasonbed.tracking import log_run

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "manifest.json"
        path.write_text(json.dumps({**manifest, "config": redacted_config(cfg)}, indent=2, default=str))
        summary = {key: value for key, value in manifest["summary"].items() if not isinstance(value, dict)}
        name = f"generate-{dataset}-{cfg.engine.name}"
        log_run(cfg.tracking, name, redacted_config(cfg), [{"step": 0, **summary}], [path], kind="generation",
                directory=Path(tempfile.gettempdir()) if storage.is_remote(cfg.output) else Path(cfg.output),
                default_experiment=f"{dataset}-chains")


def redacted_config(cfg: GenerationConfig) -> dict[str, Any]:
    """The resolved config without secrets (storage options masked)."""
    resolved = to_dict(cfg)
    resolved["data"]["storage_options"] = storage.redact(cfg.data.storage_options)
    resolved["output_storage_options"] = storage.redact(cfg.output_storage_options)
    return resolved
