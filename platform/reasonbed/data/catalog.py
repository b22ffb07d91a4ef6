"""Resolve a data config to a spec and a root: built-in specs, `folder` datasets, offline benchmarks.

`DataConfig` is the data section of every job's config. `resolve()` returns the spec and the root
to read: for the offline benchmarks (`synthetic_shapes`, `rotated_digits`) with no root given, the
benchmark is generated once into the reasonbed cache (keyed by its parameters) and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from reasonbed import storage
from reasonbed.data import digits, synthetic
from reasonbed.data.specs import DATASETS, DatasetError, DatasetSpec, load_spec_yaml, spec_from_mapping

OFFLINE_GENERATORS = {"synthetic_shapes": synthetic.generate, "rotated_digits": digits.generate}


@dataclass
class DataConfig:
    """Which dataset to read and how to split it."""

    dataset: str = "synthetic_shapes"  # a registered spec name, or "folder" for any DomainBed-layout tree
    root: str = ""  # local path or s3://bucket/prefix; empty = generate the offline benchmark
    spec_file: str = ""  # for "folder": a YAML spec (domains, classes, hierarchy); empty = discover
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options (no secrets: use env)
    on_corrupt: Literal["error", "skip"] = "error"  # a corrupt image stops the run, or is skipped and counted
    holdout_fraction: float = 0.2  # DomainBed's in/out holdout per source domain
    split_seed: int = 0  # seed of the in/out holdout hash
    images_per_class: int = 12  # offline synthetic benchmark: images per (domain, class)
    image_size: int = 56  # offline benchmarks: image side in pixels
    palette: Literal["random", "by_class"] = "random"  # synthetic_shapes: colour per image, or per class (easy)

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise DatasetError(f"data.holdout_fraction must be in [0, 1), got {self.holdout_fraction!r}")
        if self.images_per_class < 1:
            raise DatasetError(f"data.images_per_class must be >= 1, got {self.images_per_class!r}")
        if self.dataset != "folder" and self.dataset not in DATASETS:
            known = ", ".join([*DATASETS.names(), "folder"])
            raise DatasetError(f"data.dataset: unknown dataset {self.dataset!r}; known datasets: {known}")


def discover_spec(root: str, storage_options: Mapping[str, Any] | None = None, name: str = "folder") -> DatasetSpec:
    """A spec from the tree: domain folders and the union of class folders, sorted."""
    fs, base = storage.filesystem(root, storage_options)
    if not fs.exists(base) or not fs.isdir(base):
        raise DatasetError(f"dataset root {root!r} does not exist or is not a directory")
    domains, classes = [], set()
    for entry in fs.ls(base, detail=True):
        if entry.get("type") != "directory":
            continue
        domains.append(entry["name"].rstrip("/").rsplit("/", 1)[-1])
        for sub in fs.ls(entry["name"], detail=True):
            if sub.get("type") == "directory":
                classes.add(sub["name"].rstrip("/").rsplit("/", 1)[-1])
    if not domains:
        raise DatasetError(f"dataset root {root!r} has no domain folders (expected root/<domain>/<class>/<image>)")
    return spec_from_mapping({"name": name, "domains": sorted(domains), "classes": sorted(classes)}, repr(root))


def offline_root(cfg: DataConfig) -> str:
    """Generate (once) the offline benchmark for `cfg` in the cache and return its root."""
    params = {"dataset": cfg.dataset, "images_per_class": cfg.images_per_class, "image_size": cfg.image_size,
              "palette": cfg.palette, "version": 1}
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = storage.cache_dir() / "data" / f"{cfg.dataset}-{key}"
    if (root / ".complete").exists():
        return str(root)
    staging = root.with_name(root.name + f".tmp{os.getpid()}")
    if cfg.dataset == "synthetic_shapes":
        synthetic.generate(str(staging), images_per_class=cfg.images_per_class, image_size=cfg.image_size,
                           palette=cfg.palette)
    else:
        digits.generate(str(staging), images_per_domain=cfg.images_per_class * 10, image_size=cfg.image_size)
    (staging / ".complete").write_text(json.dumps(params))
    try:
        staging.rename(root)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return str(root)


def resolve(cfg: DataConfig) -> tuple[DatasetSpec, str]:
    """The spec and root for a data config."""
    if cfg.dataset == "folder":
        if not cfg.root:
            raise DatasetError("data.root is required for dataset 'folder'")
        spec = load_spec_yaml(cfg.spec_file) if cfg.spec_file else discover_spec(cfg.root, cfg.storage_options)
        return spec, cfg.root
    spec = DATASETS.get(cfg.dataset)
    if cfg.root:
        return spec, cfg.root
    if cfg.dataset in OFFLINE_GENERATORS:
        return spec, offline_root(cfg)
    raise DatasetError(f"data.root is required for dataset {cfg.dataset!r} (a local path or s3:// URL)")
