"""The generation job's config: data, engine, sampling, output and the second pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from reasonbed.config import ConfigError
from reasonbed.data.catalog import DataConfig
from reasonbed.inference.base import EngineConfig, SamplingConfig, check_standalone
from reasonbed.tracking import TrackingConfig


@dataclass
class GenerationConfig:
    """Teacher chains for every image of a dataset (see docs/generation.md)."""

    data: DataConfig = field(default_factory=DataConfig)  # the images to write chains for
    engine: EngineConfig = field(default_factory=EngineConfig)  # the teacher: engine, model (engine.model.*), actors
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # candidates per image and how they are sampled
    output: str = ""  # local directory or s3://bucket/prefix for shards and manifest
    output_storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options (no secrets)
    domains: list[str] = field(default_factory=list)  # domains to generate for (empty = all)
    shard_size: int = 64  # images per shard
    second_pass: Literal["none", "more", "rationalize"] = "none"  # for images with no kept chain
    second_pass_n: int = 4  # candidates per image in the second pass
    # An image that cannot be read while generating is recorded and skipped, or stops the run (images that
    # do not decode are found before, at scan time, by data.on_corrupt)
    on_bad_image: Literal["skip", "error"] = "skip"
    ray_address: str = ""  # join this Ray cluster (empty: RAY_ADDRESS or a local Ray)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow / W&B logging of the summary

    def __post_init__(self) -> None:
        check_standalone(self.engine.name)
        if self.shard_size < 1:
            raise ConfigError(f"shard_size: value {self.shard_size!r} must be >= 1")
        if self.second_pass_n < 1:
            raise ConfigError(f"second_pass_n: value {self.second_pass_n!r} must be >= 1")
