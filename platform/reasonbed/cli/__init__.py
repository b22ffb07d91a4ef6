"""The reasonbed command line: the console script `reasonbed` and `python -m reasonbed` are the same CLI.

Every command is one module of this package holding a `COMMAND` (reasonbed.cli.base.Command) and
one line in COMMANDS below; jobs/*.py are thin entry points that `ray job submit` runs, each calling
one command. Every command takes --dry-run and --help-config (see reasonbed.cli.base).

  generate     teacher reasoning chains for every image (jobs/generate_reasoning.py)
  train        fine-tune with one method on one LODO split (jobs/train.py)
  rl           GRPO with domain-knowledge rewards (jobs/rl_finetune.py)
  tune         LODO hyperparameter sweep and report (jobs/tune.py, jobs/tune_<dataset>.py)
  evaluate     OOD evaluation: zero-shot, in-context under shift, domain knowledge, probe (jobs/evaluate_ood.py)
  export       the chosen adapter (or merged model) in Hugging Face format with a model card
  predict      batch predictions over any folder of images (Ray Data + vLLM/hf/openai engines)
  report       Markdown + self-contained HTML report and trials.csv/parquet of a sweep folder
  dashboard    optuna-dashboard and TensorBoard of a sweep folder on 127.0.0.1 (Ctrl-C stops them)
  tiny-model   build (or reuse from the cache) an offline tiny MLLM in Hugging Face format
  make-data    write an offline benchmark (synthetic_shapes, rotated_digits) in DomainBed layout
  splits       print the leave-one-domain-out splits of a dataset (sizes per part)
  install-startup-hook   write the torchvision fix's .pth startup file into site-packages
  cluster-check          check a Ray cluster's runtime set-up, or the cluster/ config files
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from reasonbed.cli.base import Command, configure, dispatch, run_command
from reasonbed.registry import Registry

COMMANDS: Registry[Command] = Registry("command")
COMMANDS.add("generate", "reasonbed.cli.generate:COMMAND")
COMMANDS.add("train", "reasonbed.cli.train:COMMAND")
COMMANDS.add("rl", "reasonbed.cli.rl:COMMAND")
COMMANDS.add("tune", "reasonbed.cli.tune:COMMAND")
COMMANDS.add("evaluate", "reasonbed.cli.evaluate:COMMAND")
COMMANDS.add("export", "reasonbed.cli.export:COMMAND")
COMMANDS.add("predict", "reasonbed.cli.predict:COMMAND")
COMMANDS.add("report", "reasonbed.cli.report:COMMAND")
COMMANDS.add("dashboard", "reasonbed.cli.dashboard:COMMAND")
COMMANDS.add("tiny-model", "reasonbed.cli.tiny_model:COMMAND")
COMMANDS.add("make-data", "reasonbed.cli.make_data:COMMAND")
COMMANDS.add("splits", "reasonbed.cli.splits:COMMAND")
COMMANDS.add("install-startup-hook", "reasonbed.cli.startup_hook:COMMAND")
COMMANDS.add("cluster-check", "reasonbed.cli.cluster_check:COMMAND")


def build_parser() -> argparse.ArgumentParser:
    """`reasonbed` with one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="reasonbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS.names():
        command = COMMANDS.get(name)
        sub = commands.add_parser(name, help=command.summary, description=command.doc,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        configure(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script `reasonbed` and `python -m reasonbed`."""
    return dispatch(build_parser().parse_args(argv))


def job(name: str, argv: Sequence[str] | None = None, doc: str | None = None) -> int:
    """What a jobs/*.py entry point runs: command `name` with the job's docstring as its help."""
    return run_command(COMMANDS.get(name), argv, doc=doc)


__all__ = ["COMMANDS", "Command", "build_parser", "job", "main"]
