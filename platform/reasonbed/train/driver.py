"""Run one training run: split, examples, the worker loop on a backend, and the run directory.

`run_training(cfg)` resolves the data and the LODO split, joins teacher chains for methods that need
them (refusing too little coverage and, unless allowed, label-conditioned chains), opens the run
directory (`reasonbed.train.rundir`), runs `reasonbed.train.worker.worker_loop` on a Ray Train
TorchTrainer (DDP on CPU/GPU, FailureConfig for restarts, the best checkpoints by val_acc kept) or in
this process (`scale.backend=local`), and finishes the run directory from the final checkpoint. Every
method's run goes through here; multi-stage methods compose several such runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from reasonbed import storage
from reasonbed.config import ConfigError
from reasonbed.data import catalog
from reasonbed.data.reader import ImageCheck, check_images, scan
from reasonbed.data.specs import DatasetSpec
from reasonbed.data.splits import lodo_split
from reasonbed.models.configs import check_real_model
from reasonbed.train.config import TrainConfig
from reasonbed.train.rundir import RunDir, TrainResult

log = logging.getLogger(__name__)
HELDOUT = "heldout"  # role and part of every image of `val_domain` (leave-one-domain-out selection runs)


def chains_by_image(chains: str, storage_options: dict[str, Any] | None = None,
                    allow_label_conditioned: bool = False) -> dict[str, list[str]]:
    """Kept chains of a generation output, per image id; label-conditioned ones only when allowed."""
    from reasonbed.generation.shards import kept_chains

    table = kept_chains(chains, storage_options)
    kinds = table.column("prompt_kind").to_pylist()
    found: dict[str, list[str]] = {}
    excluded = 0
    for image_id, text, kind in zip(table.column("image_id").to_pylist(), table.column("chain").to_pylist(), kinds,
                                    strict=True):
        if kind == "rationalization" and not allow_label_conditioned:
            excluded += 1
            continue
        found.setdefault(image_id, []).append(text)
    if excluded:
        log.info("%d kept chain(s) of %s were written with the label shown (rationalization): not trained on "
                 "(allow_label_conditioned=false)", excluded, chains)
    return found


def evaluation_rows(cfg: TrainConfig, spec: DatasetSpec, index: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every image with its role (source, test, heldout) and DomainBed part (in, out; heldout)."""
    split = lodo_split(spec, index, cfg.test_domain, cfg.data.holdout_fraction, cfg.data.split_seed)
    placed = split.role_and_part()
    rows = []
    for row in index:
        role, part = (HELDOUT, HELDOUT) if row["domain"] == cfg.val_domain else placed[row["id"]]
        rows.append({**row, "role": role, "part": part})
    return rows


def prepare_examples(cfg: TrainConfig, spec: DatasetSpec, index: Sequence[dict[str, Any]],
                     chains: dict[str, list[str]] | None = None) -> tuple[list[dict], list[dict]]:
    """Training examples (the source domains' in parts, with chains) and evaluation rows (every image)."""
    from reasonbed.methods.base import build_method

    rows = evaluation_rows(cfg, spec, index)
    method = build_method(cfg.method, cfg.method_config, spec.display_names)
    if method.needs_chains and not cfg.chains and chains is None:
        raise ConfigError(f"method {cfg.method!r} needs teacher chains: set chains=PATH to a generation output "
                          f"(jobs/generate_reasoning.py)")
    training = [row for row in rows if row["role"] == "source" and row["part"] == "in"]
    if method.needs_chains:
        covered = sum(1 for row in training if (chains or {}).get(row["id"]))
        if covered < cfg.min_chain_coverage * len(training) or (cfg.min_chain_coverage and not covered):
            raise ConfigError(
                f"method {cfg.method!r}: only {covered} of {len(training)} training images of test domain "
                f"{cfg.test_domain!r} have a kept chain in {cfg.chains or 'the chains given'!r} "
                f"(min_chain_coverage={cfg.min_chain_coverage}); were the chains generated for another dataset, "
                f"spec or data root, or are they label-conditioned (allow_label_conditioned=false)?")
    examples = []
    for row in training:
        example = {**row, "chains": (chains or {}).get(row["id"], [])}
        if method.usable(example):
            examples.append(example)
    if not examples:
        raise ConfigError(f"method {cfg.method!r}: no usable training example for test domain {cfg.test_domain!r}")
    with_chain = sum(1 for example in examples if example["chains"])
    log.info("%d training examples (%d with kept chains), %d evaluation rows", len(examples), with_chain, len(rows))
    return examples, rows


def dropped_examples(rows: Sequence[dict[str, Any]], examples: Sequence[dict[str, Any]], first: int = 5
                     ) -> dict[str, Any]:
    """The training images (source in parts) a method left out (no kept chain it can use): count and first ids."""
    used = {example["id"] for example in examples}
    dropped = [row["id"] for row in rows if row["role"] == "source" and row["part"] == "in" and row["id"] not in used]
    if dropped:
        log.warning("%d of %d training images have no usable kept chain and are left out: %s%s", len(dropped),
                    len(dropped) + len(used), ", ".join(dropped[:first]), " ..." if len(dropped) > first else "")
    return {"count": len(dropped), "first": dropped[:first]}


def resolve(cfg: TrainConfig) -> tuple[TrainConfig, DatasetSpec, str, list[dict[str, Any]]]:
    """Fill defaults that depend on the data (test domain), check it, and scan the index (data.on_corrupt applied)."""
    cfg, spec, root, checked = resolve_checked(cfg)
    return cfg, spec, root, checked.rows


def resolve_checked(cfg: TrainConfig) -> tuple[TrainConfig, DatasetSpec, str, ImageCheck]:
    """resolve(), with the image check's record: the rows kept and the corrupt images skipped."""
    check_real_model(cfg.model, cfg.data.dataset, cfg.data.dataset in catalog.OFFLINE_GENERATORS)  # before any read
    spec, root = catalog.resolve(cfg.data)
    test_domain = cfg.test_domain or spec.domains[0]
    spec.check_domain(test_domain)
    if cfg.val_domain:
        spec.check_domain(cfg.val_domain)
        if cfg.val_domain == test_domain:
            raise ConfigError(f"val_domain {cfg.val_domain!r} is the test domain: hold out another source domain")
    index = scan(spec, root, storage_options=cfg.data.storage_options)
    checked = check_images(spec, root, index, cfg.data.storage_options, cfg.data.on_corrupt)  # before any training
    return replace(cfg, test_domain=test_domain), spec, root, checked


def check_shared_storage(location: str, key: str, shown: str, consequence: str) -> None:
    """On a multi-node cluster `location` must be object storage every node reads and writes: otherwise an error
    naming the config `key` (its value `shown`), what goes wrong, and the fix (raised before anything is written)."""
    from reasonbed.ray_runtime import multi_node

    why = multi_node()
    if why and not storage.is_remote(location):
        raise ConfigError(f"{key}: {shown!r} is on the driver's disk, but the Ray cluster is multi-node ({why}): "
                          f"{consequence}")


def check_storage_for_cluster(cfg: TrainConfig, storage_root: str) -> None:
    """Checkpoints and adapters must live where every node reads them (check_shared_storage)."""
    check_shared_storage(storage_root, "storage_path", cfg.storage_path or "(empty: run_dir/ray)",
                         "workers on other nodes can neither write checkpoints there nor read adapters from it; set "
                         "storage_path=s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (credentials from the environment "
                         "or the nodes' roles)")


def stage_init_adapter(cfg: TrainConfig, run: RunDir) -> str:
    """The init_adapter the workers read: a URI as is; a driver-side directory copied into the run's storage
    when that is object storage (workers on other nodes cannot read the driver's disk)."""
    if not cfg.init_adapter or storage.is_remote(cfg.init_adapter):
        return cfg.init_adapter
    from pathlib import Path

    local = Path(cfg.init_adapter).expanduser()
    if not (local / "adapter_model.safetensors").is_file():
        raise ConfigError(f"init_adapter: {cfg.init_adapter!r} is not a LoRA adapter directory "
                          f"(no adapter_model.safetensors)")
    if cfg.scale.backend == "local" or not storage.is_remote(run.storage_root):
        return str(local.resolve())
    target = storage.join(run.storage_root, "init_adapter")
    fs, path = storage.filesystem(target)
    fs.put(f"{local}/", path, recursive=True)
    log.info("init_adapter %s copied to the run's storage: %s", local, target)
    return target


def build_trainer(cfg: TrainConfig, loop_config: dict[str, Any], run: RunDir, callbacks: Sequence[Any] = ()) -> Any:
    """The TorchTrainer of the worker loop: workers and resources, storage, restarts, checkpoints kept."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from reasonbed.train.context import SCORE
    from reasonbed.train.worker import worker_loop

    # checkpoints reach object storage through reasonbed.storage's filesystem (its retries, endpoint, options)
    filesystem, storage_path = storage.pyarrow_filesystem(cfg.storage_path or str(run.path / "ray"))
    return TorchTrainer(
        worker_loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.scale.num_workers, use_gpu=cfg.scale.use_gpu,
                                     resources_per_worker={"CPU": cfg.scale.cpus_per_worker, **cfg.scale.resources}),
        run_config=RunConfig(
            name=cfg.run_name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=cfg.scale.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.scale.keep_checkpoints,
                                               checkpoint_score_attribute=SCORE, checkpoint_score_order="max"),
            callbacks=list(callbacks) or None,
        ),
    )


def run_training(cfg: TrainConfig, callbacks: Sequence[Any] = (),
                 chains_override: dict[str, list[str]] | None = None) -> TrainResult:
    """Train one method on one LODO split; returns the run directory and every evaluation report."""
    from reasonbed.methods.base import build_method
    from reasonbed.models.loading import resolve_model

    cfg, spec, root, checked = resolve_checked(cfg)
    index, skipped = checked.rows, checked.record()
    if cfg.scale.backend == "ray":
        from reasonbed.ray_runtime import init_ray

        init_ray(address=cfg.ray_address or None)
        check_storage_for_cluster(cfg, RunDir(cfg).storage_root)
    run = RunDir.open(cfg)
    if run.done:
        log.info("run %s is done: its result is returned without training again", run.path)
        return replace(run.result(), trained=False)
    chains = chains_override if chains_override is not None else (
        chains_by_image(cfg.chains, allow_label_conditioned=cfg.allow_label_conditioned) if cfg.chains else None)
    examples, rows = prepare_examples(cfg, spec, index, chains)
    skipped = {**skipped, "dropped_examples": dropped_examples(rows, examples)}
    steps = build_method(cfg.method, cfg.method_config, spec.display_names).total_steps(cfg, len(examples))
    finished = run.finished_checkpoint(steps) if run.resuming else None
    if finished:
        log.info("run %s: its storage holds the finished run; finishing the run directory from it", run.path)
        return replace(run.finish(finished, index, skipped), trained=False)
    model = resolve_model(cfg.model)
    # the workers' copy: the detected family, and an init_adapter they can read from any node
    worker_cfg = replace(cfg, model=replace(cfg.model, family=model.family), init_adapter=stage_init_adapter(cfg, run))
    loop_config = {"cfg": worker_cfg, "examples": examples, "eval_rows": rows, "model_path": model.path,
                   "data_root": root, "class_names": spec.display_names, "run_dir": str(run.path),
                   "run_name": cfg.run_name, "checkpoint_root": run.storage_root,
                   "super_classes": spec.super_classes}
    if cfg.scale.backend == "local":
        from reasonbed.train.context import LocalContext
        from reasonbed.train.worker import worker_loop

        worker_loop({**loop_config, "local_storage": run.storage_root})
        with LocalContext(run.storage_root, cfg.scale.keep_checkpoints).checkpoint() as final:
            return run.finish(final, index, skipped)
    result = build_trainer(cfg, loop_config, run, callbacks).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.run_name!r} ended without a checkpoint")
    # the final (latest) checkpoint, read back from the run's storage (local path or s3://)
    return run.finish(storage.join(run.storage_root, result.checkpoint.path.rstrip("/").rsplit("/", 1)[-1]), index,
                      skipped)
