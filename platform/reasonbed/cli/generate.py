"""`reasonbed generate`: DomainBed-Reasoning chains, a teacher MLLM writing five-stage chains for every image.

One machine (tiny model, synthetic benchmark, local Ray, CPU; template and vLLM teachers):
    reasonbed generate --smoke-test
Anything else is a key=value override of reasonbed.generation.config.GenerationConfig (--help-config
lists them), e.g. `sampling.temperature=0.7 second_pass=rationalize
engine.engine_kwargs.gpu_memory_utilization=0.85`; the teacher model is `engine.model.*`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from reasonbed.cli.base import Command, add_config_options, resolve_config, temporary_path

FLAGS = {
    "dataset": "data.dataset", "data_root": "data.root", "output": "output", "engine": "engine.name",
    "model": "engine.model.path", "family": "engine.model.family", "dtype": "engine.model.dtype",
    "actors": "engine.actors", "num_gpus": "engine.num_gpus", "candidates": "sampling.n", "shard_size": "shard_size",
    "second_pass": "second_pass", "batch_size": "engine.batch_size",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 3},
    "engine": {"batch_size": 8, "max_model_len": 1024},  # vllm (hf where vLLM is not installed)
    "sampling": {"n": 2, "max_tokens": 48},
    "shard_size": 12,
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser, FLAGS)


def resolve(args: argparse.Namespace) -> Any:
    from reasonbed.cli.checks import check_generation
    from reasonbed.generation.config import GenerationConfig

    cfg = resolve_config(GenerationConfig, args, FLAGS, SMOKE)
    if args.smoke_test and not cfg.output:
        cfg = replace(cfg, output=temporary_path("reasonbed-chains-"))
    check_generation(cfg)
    return cfg


def execute(cfg: Any, args: argparse.Namespace) -> int:
    from reasonbed.generation.pipeline import run_generation
    from reasonbed.generation.summary import format_summary
    from reasonbed.storage import join

    if args.smoke_test:  # both teachers: the template one (with rejections and a second pass) and vLLM (or hf)
        runs = [("template", replace(cfg, engine=replace(cfg.engine, name="template", template_noise=0.2),
                                     output=join(cfg.output, "template"), second_pass="more")),
                (cfg.engine.name, replace(cfg, output=join(cfg.output, cfg.engine.name)))]
    else:
        runs = [(cfg.engine.name, cfg)]
    for name, run_cfg in runs:
        summary = run_generation(run_cfg)
        print(f"== {name} teacher -> {run_cfg.output}\n{format_summary(summary)}")
        if summary["candidates"] == 0:
            print(json.dumps(summary), file=sys.stderr)
            return 1
    return 0


def config_keys() -> list[Any]:
    from reasonbed.cli.confighelp import describe
    from reasonbed.generation.config import GenerationConfig

    return describe(GenerationConfig)


COMMAND = Command(name="generate", summary="teacher reasoning chains for every image (Ray Data + vLLM)",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute, config_keys=config_keys)
