"""`reasonbed tune`: a LODO hyperparameter sweep (Ray Tune + Optuna + ASHA), then the report.

`--smoke-test` runs the whole chain on the embedded default: the synthetic benchmark, the tiny
model, template-teacher chains, tuning of `direct` and `mtct` over every LODO split with ASHA, and
the report (Markdown + HTML) - the README's main job.

One machine (embedded default: synthetic benchmark, tiny model, template chains, local Ray, CPU):
    reasonbed tune --smoke-test
Real data (a GPU machine; jobs/tune_pacs.py and docs/cluster.md have the cluster commands):
    reasonbed tune --dataset pacs --config configs/tune_pacs_internvl3_8b.yaml --data-root /data/PACS \
        --chains /data/chains/pacs --storage runs
Rerunning the same command resumes an interrupted sweep. Ctrl+C (or SIGTERM, `ray job stop`) stops the
whole sweep with its state saved and exits with status 130 (a second Ctrl+C exits at once); one driver
runs a sweep at a time (a second one exits with status 3 naming the first; --force takes over). The
report is written into the sweep storage after every study. Other key=value overrides set
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
    # 12 images per (domain, class): the test domain's in part holds 58 images (DomainBed's 80/20 holdout), so
    # a cell's standard error is small; the pretrained tiny model is above chance zero-shot, below ceiling.
    "data": {"dataset": "synthetic_shapes", "images_per_class": 12},
    "methods": ["direct", "mtct"],
    "num_samples": 2,
    "max_concurrent_trials": 1,
    "studies_in_parallel": 2,
    "generate_chains": True,
    "generation": {"engine": {"name": "template", "template_noise": 0.1}, "sampling": {"n": 2}},
    # each trial trains in its own Tune trial process (one worker, reused by the study's next trial): on one
    # machine a Ray Train worker group only adds its start (the same numbers, about a third of the time:
    # docs/tuning.md); `train.scale.backend=ray` for s3:// storage or several workers per trial
    "train": {"optim.epochs": 3.0, "eval.every": 11, "scale.backend": "local"},
    # examples seen: 174 training images x 3 epochs; ASHA may stop a trial after its first epoch
    "asha": {"grace_period": 174, "reduction_factor": 2, "max_t": 1024},
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
    parser.add_argument("--force", action="store_true",
                        help="take the sweep over from the driver that holds its lease even if that lease has not "
                             "expired (that driver, if alive, stops at its next heartbeat)")
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


LEASE_HELD = 3  # exit status when another driver runs the sweep


def resume_command(args: argparse.Namespace, cfg: Any) -> str:
    """The command that resumes this sweep: the same one (with --storage fixed when a smoke test chose it)."""
    import shlex
    import sys

    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        argv.insert(0, "python")
    if args.smoke_test and args.storage is None:
        argv.append(f"--storage={cfg.storage}")
    return shlex.join(argv)


def execute(cfg: Any, args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from reasonbed import storage
    from reasonbed.report.build import publish_report
    from reasonbed.tune.control import EXIT_CODE, SweepControl, SweepInterrupted
    from reasonbed.tune.driver import run_sweep
    from reasonbed.tune.lease import LeaseHeldError

    def local_copy(sweep_uri: str) -> Path | None:
        """An object-store sweep's report is also kept in ./runs/<sweep>/report (the driver's local folder)."""
        return Path("runs").resolve() / sweep_uri.rstrip("/").rsplit("/", 1)[-1] / "report" \
            if storage.is_remote(sweep_uri) else None

    hint = f"Resume with the same command: {resume_command(args, cfg)}"
    try:
        outcome = run_sweep(cfg, force=args.force, control=SweepControl(resume_hint=hint),
                            after_study=lambda uri: publish_report(uri, local_copy(uri)))
    except LeaseHeldError as error:
        print(f"error: {error}", file=sys.stderr)
        return LEASE_HELD
    except SweepInterrupted as stopped:
        print(f"{stopped}. {hint}", file=sys.stderr)
        return EXIT_CODE
    except KeyboardInterrupt:  # Ctrl+C while the sweep was still being set up (model build, lease, Ray start)
        print(f"sweep stopped before its first study started. {hint}", file=sys.stderr)
        return EXIT_CODE
    report = publish_report(outcome["sweep"], local_copy(outcome["sweep"]))
    if cfg.tracking.enabled:
        from reasonbed.tracking import log_run

        name = outcome["sweep"].rstrip("/").rsplit("/", 1)[-1]
        local_report = local_copy(outcome["sweep"]) or Path(report).parent  # the report's files on this machine
        log_run(cfg.tracking, f"{name}-report", cfg, artifacts=[local_report / file for file in (
            "report.md", "report.html", "trials.csv")], kind="sweep-report", directory=outcome["local"],
            default_experiment=name)
    print(json.dumps({"sweep": outcome["sweep"], "report": report, "studies": outcome["studies"]},
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
