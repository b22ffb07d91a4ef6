"""Run a training config end to end: chains for the smoke test, then the method's driver.

`run(cfg)` dispatches by method: `sarr` runs its rounds (reasonbed.train.sarr), `grpo` its RL
driver, every other method one Ray Train run. With `smoke=True` and a method that needs chains but
none given, template-teacher chains are generated first into the run directory.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import TrainResult, run_training


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
    from reasonbed.methods.base import build_method
    from reasonbed.train.driver import resolve

    cfg = resolve(cfg)[0]
    method = build_method(cfg.method, cfg.method_config, ["a", "b"])
    if smoke and method.needs_chains and not cfg.chains:
        cfg = replace(cfg, chains=smoke_chains(cfg))
    if cfg.method == "sarr":
        from reasonbed.train.sarr import run_sarr

        return run_sarr(cfg, callbacks=callbacks)
    if cfg.method == "grpo":
        from reasonbed.rl.driver import run_grpo

        return run_grpo(cfg, callbacks=callbacks)
    return run_training(cfg, callbacks=callbacks)
