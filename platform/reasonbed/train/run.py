"""Run a training config end to end: chains for the smoke test, then the method's driver.

`run(cfg)` asks the METHODS registry how the method runs: its own driver (a multi-stage method such
as SARR names one) or one training run (`reasonbed.train.driver.run_training`). With `smoke=True`
and a method that needs chains but none given, template-teacher chains are generated first into the
run directory.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import run_training
from reasonbed.train.rundir import TrainResult


def smoke_chains(cfg: TrainConfig) -> str:
    """Template-teacher chains for the synthetic benchmark (CPU runs need true chains to learn from)."""
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation
    from reasonbed.inference.base import EngineConfig, SamplingConfig

    output = str(Path(cfg.run_dir).resolve() / "chains")
    run_generation(GenerationConfig(data=cfg.data, engine=EngineConfig(name="template", template_noise=0.1),
                                    sampling=SamplingConfig(n=2), output=output, shard_size=64,
                                    ray_address=cfg.ray_address))
    return output


def run(cfg: TrainConfig, smoke: bool = False, callbacks: tuple = ()) -> TrainResult:
    from reasonbed.methods.base import method_class
    from reasonbed.train.driver import resolve

    cfg = resolve(cfg)[0]
    method = method_class(cfg.method)
    method.parse_options(cfg.method_config)  # a bad option fails here, before any work
    if smoke and method.needs_chains and not cfg.chains:
        cfg = replace(cfg, chains=smoke_chains(cfg))
    if method.driver:
        module, _, name = method.driver.partition(":")
        return getattr(importlib.import_module(module), name)(cfg, callbacks=callbacks)
    return run_training(cfg, callbacks=callbacks)
