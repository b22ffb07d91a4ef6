"""`reasonbed tune`: a LODO hyperparameter sweep (Ray Tune + Optuna + ASHA), then the report.

`--smoke-test` runs the whole chain on the embedded default: the synthetic benchmark, the tiny
model, template-teacher chains, tuning of `direct` and `mtct` over every LODO split with ASHA, and
the report (Markdown + HTML) - the README's main job.

One machine (embedded default: synthetic benchmark, tiny model, template chains, local Ray, CPU):
    reasonbed tune --smoke-test
Real data (a GPU machine; jobs/tune_pacs.py and docs/cluster.md have the cluster commands):
    reasonbed tune --dataset pacs --config configs/tune_pacs_internvl3_8b.yaml --data-root /data/PACS \
        --chains /data/chains/pacs --storage runs
Rerunning the same command resumes an interrupted sweep. Other key=value overrides set
reasonbed.tune.config.SweepConfig fields: train.<TrainConfig key>=... for every trial,
generation.<GenerationConfig key>=... for generate_chains (--help-config lists them all).
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import replace
from typing import Any

from reasonbed.cli.base import Command, add_config_options, comma_list, resolve_config, temporary_path

FLAGS = {
    "data_root": "data.root", "storage": "storage", "num_samples": "num_samples", "name": "name",
    "max_concurrent_trials": "max_concurrent_trials", "chains": "chains", "study_storage": "study_storage",
    "studies_in_parallel": "studies_in_parallel",
}
LISTS = {"methods": str, "seeds": int, "test_domains": str}  # comma-separated flags -> list keys
SMOKE: dict[str, Any] = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 4, "palette": "by_class"},
    "methods": ["direct", "mtct"],
    "num_samples": 2,
    "max_concurrent_trials": 1,
    "studies_in_parallel": 2,
    "generate_chains": True,
    "generation": {"engine": {"name": "template", "template_noise": 0.1}, "sampling": {"n": 2}},
    "train": {"optim.max_steps": 16, "eval.every": 8, "eval.max_per_domain": 4},
    "asha": {"grace_period": 64, "reduction_factor": 2, "max_t": 256},  # examples seen: 16 steps x batch <= 16
}


def configure(parser: argparse.ArgumentParser, dataset: str | None = None) -> None:
    """The sweep's options; a preset (jobs/tune_<dataset>.py) fixes the dataset instead of --dataset."""
    add_config_options(parser, FLAGS, gpu_key="train.scale.use_gpu", gpu_help="one GPU per training worker")
    if dataset is None:
        parser.add_argument("--dataset", default=None, help="sets data.dataset (not under --smoke-test: the "
                                                            "embedded default is the synthetic benchmark)")
    parser.set_defaults(preset=dataset)
    parser.add_argument("--methods", default=None, help="comma-separated methods, e.g. direct,mtct,sarr")
    parser.add_argument("--seeds", default=None, help="comma-separated trial seeds, e.g. 0,1,2")
    parser.add_argument("--test-domains", default=None, help="comma-separated test domains (default: all)")
    parser.add_argument("--lodo-selection", action="store_true",
                        help="also train every finished trial with each source domain held out in turn, for "
                             "leave-one-domain-out selection (sets lodo_selection=true)")


def resolve(args: argparse.Namespace) -> Any:
    from reasonbed.cli.checks import check_sweep
    from reasonbed.tune.config import SweepConfig

    dataset = args.preset or getattr(args, "dataset", None)
    first = [f"data.dataset={dataset}"] if dataset and not args.smoke_test else []
    first += [f"{key}={json.dumps(comma_list(value, LISTS[key]))}" for key in LISTS
              if (value := getattr(args, key))]
    if args.lodo_selection:
        first.append("lodo_selection=true")
    smoke = {**SMOKE, "storage": temporary_path("reasonbed-sweep-")}  # a fresh folder unless one is given
    cfg = resolve_config(SweepConfig, args, FLAGS, smoke, first)
    check_sweep(cfg)
    return cfg


def execute(cfg: Any, args: argparse.Namespace) -> int:  # noqa: ARG001 - the resolved config is all it needs
    from pathlib import Path

    from reasonbed.report.build import build_report
    from reasonbed.tune.driver import run_sweep

    outcome = run_sweep(cfg)
    report = build_report(outcome["sweep"], Path(outcome["local"]) / "report")
    if cfg.tracking.enabled:
        from reasonbed.tracking import log_run

        name = outcome["sweep"].rstrip("/").rsplit("/", 1)[-1]
        log_run(cfg.tracking, f"{name}-report", cfg, artifacts=[report.with_name(file) for file in (
            "report.md", "report.html", "trials.csv")], kind="sweep-report", directory=outcome["local"],
            default_experiment=name)
    print(json.dumps({"sweep": outcome["sweep"], "report": str(report), "studies": outcome["studies"]},
                     indent=2, default=str))
    return 0


def config_keys() -> list[Any]:
    from reasonbed.cli.confighelp import describe, method_keys
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.train.config import TrainConfig
    from reasonbed.tune.config import SweepConfig

    return describe(SweepConfig, expand={
        "train": lambda prefix: describe(TrainConfig, prefix, {"method_config": method_keys}),
        "generation": lambda prefix: describe(GenerationConfig, prefix)})


COMMAND = Command(name="tune", summary="LODO hyperparameter sweep (Ray Tune + Optuna + ASHA) and report",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute, config_keys=config_keys)


def preset(dataset: str, argv: list[str] | None = None, doc: str | None = None) -> int:
    """jobs/tune_<dataset>.py: the tune command with the dataset fixed."""
    from reasonbed.cli.base import run_command

    return run_command(replace(COMMAND, configure=functools.partial(configure, dataset=dataset)), argv, doc=doc)
