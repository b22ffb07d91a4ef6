"""`reasonbed rl`: GRPO fine-tuning of an MLLM's LoRA adapter with domain-knowledge rewards, on Ray Train.

Rollouts come from a vLLM actor that loads the current adapter every step (or transformers with
`--engine hf`); rewards and their weights are method_config.rewards / method_config.reward_weights.

One machine (tiny model, synthetic benchmark, local Ray, CPU):
    reasonbed rl --smoke-test --engine hf
Anything else is a key=value override of reasonbed.train.config.TrainConfig (method_config.* are the
fields of reasonbed.methods.grpo.GRPOConfig; --help-config lists them), e.g.
`method_config.rewards=[format,accuracy,hierarchy,consistency] method_config.reward_weights=[0.2,1,0.5,0.3]`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reasonbed.cli.base import Command, add_config_options
from reasonbed.config import ConfigError

FLAGS = {
    "dataset": "data.dataset", "data_root": "data.root", "test_domain": "test_domain", "model": "model.path",
    "family": "model.family", "dtype": "model.dtype", "init_adapter": "init_adapter",
    "workers": "scale.num_workers", "run_dir": "run_dir", "storage": "storage_path", "steps": "optim.max_steps",
    "lr": "optim.lr", "batch_size": "optim.batch_size", "group_size": "method_config.group_size",
    "engine": "method_config.engine", "prompt": "method_config.prompt",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 4, "palette": "by_class"},
    "test_domain": "photo",
    "optim": {"batch_size": 4, "max_steps": 4, "lr": 1e-3, "warmup_ratio": 0.0, "schedule": "constant"},
    "eval": {"every": 2, "max_per_domain": 4},
    "method_config": {"group_size": 4, "prompt": "direct", "max_tokens": 8, "rewards": ["format", "accuracy", "hierarchy"],
                      "reward_weights": [0.5, 1.0, 0.5]},
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser, FLAGS, gpu_key="scale.use_gpu", gpu_help="one GPU per training worker")


def resolve(args: argparse.Namespace) -> Any:
    from reasonbed.cli.train import train_config

    cfg = train_config(args, FLAGS, SMOKE, first=("method=grpo",))
    if cfg.method != "grpo":
        raise ConfigError(f"method: this job runs method grpo, not {cfg.method!r} (use the train command)")
    return cfg


def execute(cfg: Any, args: argparse.Namespace) -> int:  # noqa: ARG001 - the resolved config is all it needs
    from reasonbed.train.run import run

    result = run(cfg)
    keep = ("step", "reward/total", "kl", "clip_fraction", "val_acc", "test_acc")
    print(json.dumps({"run_dir": str(result.run_dir), "adapter": str(result.adapter),
                      **{key: value for key, value in result.final.items() if key in keep}}))
    return 0


def config_keys() -> list[Any]:
    from dataclasses import replace

    from reasonbed.cli.confighelp import describe, method_keys
    from reasonbed.train.config import TrainConfig

    rows = describe(TrainConfig, expand={"method_config": lambda prefix: method_keys(prefix, ["grpo"])})
    return [replace(row, default="grpo", help="this job runs method grpo") if row.key == "method" else row
            for row in rows]


COMMAND = Command(name="rl", summary="GRPO with domain-knowledge rewards (Ray Train)", doc=__doc__,
                  configure=configure, resolve=resolve, execute=execute, config_keys=config_keys)
