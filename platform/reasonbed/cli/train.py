"""`reasonbed train`: fine-tune an MLLM with LoRA on one leave-one-domain-out split, on Ray Train.

One machine (tiny model, synthetic benchmark, local Ray, CPU):
    reasonbed train --method direct --smoke-test
    reasonbed train --method mtct --smoke-test          # generates template chains first
Real data and model (see jobs/train.py for the cluster command):
    reasonbed train --config configs/train_qwen2_5_vl_7b.yaml --data-root /data/PACS --test-domain sketch \
        --chains /data/chains/pacs --gpu
Anything else is a key=value override of reasonbed.train.config.TrainConfig, e.g.
`optim.lr=1e-4 lora.r=16 method_config.reasoning_weight=0.5 eval.every=100` (--help-config lists them).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from reasonbed.cli.base import Command, add_config_options, resolve_config, temporary_path

FLAGS = {
    "method": "method", "dataset": "data.dataset", "data_root": "data.root", "test_domain": "test_domain",
    "model": "model.path", "family": "model.family", "dtype": "model.dtype", "chains": "chains",
    "workers": "scale.num_workers", "run_dir": "run_dir", "storage": "storage_path", "epochs": "optim.epochs",
    "lr": "optim.lr", "batch_size": "optim.batch_size",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 4},
    "optim": {"batch_size": 8, "epochs": 1.0, "lr": 2e-3, "warmup_ratio": 0.0},
    "eval": {"every": 4, "max_per_domain": 6, "reasoning_max_tokens": 128},  # tiny-model chains: ~80-90 tokens
    "method_config": {},
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser, FLAGS, gpu_key="scale.use_gpu", gpu_help="one GPU per worker")


def train_config(args: argparse.Namespace, flags: dict[str, str], smoke: dict[str, Any], first: tuple = ()) -> Any:
    """The TrainConfig of a train or rl job, checked; a smoke test without run_dir gets a fresh one."""
    from reasonbed.cli.checks import check_train
    from reasonbed.train.config import TrainConfig

    cfg = resolve_config(TrainConfig, args, flags, smoke, first)
    if args.smoke_test and cfg.run_dir == TrainConfig.run_dir:
        cfg = replace(cfg, run_dir=temporary_path(f"reasonbed-{cfg.method}-"))
    check_train(cfg, chains_coming=args.smoke_test)  # a smoke test generates template chains first
    if args.dry_run:
        print_memory_estimate(cfg)
    return cfg


def print_memory_estimate(cfg: Any) -> None:
    """The per-worker memory estimate on stderr, when the model's config.json is readable without the network."""
    import sys

    from reasonbed.train.worker import memory_estimate

    if not cfg.model.path:
        return
    estimate = memory_estimate(cfg, cfg.model)
    print(estimate.summary() if estimate else f"memory estimate: config.json of {cfg.model.path!r} is not readable "
          f"without the network (it is printed before training)", file=sys.stderr)


def resolve(args: argparse.Namespace) -> Any:
    return train_config(args, FLAGS, SMOKE)


def execute(cfg: Any, args: argparse.Namespace) -> int:
    from reasonbed.train.run import run

    result = run(cfg, smoke=args.smoke_test)
    final = {key: value for key, value in result.final.items() if key in ("step", "loss", "val_acc", "test_acc")}
    skipped = result.skipped_inputs if result.skipped_inputs.get("skipped") else {}  # data.on_corrupt=skip
    print(json.dumps({"run_dir": str(result.run_dir), "adapter": str(result.adapter), **final,
                      **({"skipped_inputs": skipped} if skipped else {})}))
    return 0


def config_keys() -> list[Any]:
    from reasonbed.cli.confighelp import describe, method_keys
    from reasonbed.train.config import TrainConfig

    return describe(TrainConfig, expand={"method_config": method_keys})


COMMAND = Command(name="train", summary="fine-tune one method on one LODO split (Ray Train)", doc=__doc__,
                  configure=configure, resolve=resolve, execute=execute, config_keys=config_keys)
