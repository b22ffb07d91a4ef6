"""Shared set-up of the jobs/bench_*.py benchmarks: argument parsing with --dry-run and --help-config,
the work directory with its synthetic data and factory model, and the `--json` results file.

Not a job itself: the benchmarks import it from their own folder, which Python puts first on
sys.path when it runs a script of that folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import reasonbed  # noqa: F401 - the torchvision fix, before anything imports torchvision

INTERNAL = ("dry_run", "help_config", "stage_worker")  # options that are not part of a benchmark's config


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
          resolve: Callable[[argparse.Namespace], None] = lambda args: None) -> argparse.Namespace:
    """Parse a benchmark's arguments and `resolve` them (smoke settings, checks; may raise ValueError).

    `--help-config` lists the options and `--dry-run` prints the resolved arguments as YAML; both then
    exit 0 here, before anything starts. A ValueError from `resolve` exits 2 with one line.
    """
    from reasonbed.cli.base import CONFIG_ERROR, add_standard_options
    from reasonbed.cli.confighelp import format_keys, option_keys
    from reasonbed.cli.resolved import to_yaml

    add_standard_options(parser)
    args = parser.parse_args(argv)
    if args.help_config:
        print(format_keys(option_keys(parser)))
        raise SystemExit(0)
    try:
        resolve(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR) from None
    if args.dry_run:
        print(to_yaml({k: v for k, v in vars(args).items() if k not in INTERNAL},
                      f"{parser.prog}: resolved arguments (dry run: nothing started)"))
        raise SystemExit(0)
    return args


def bench_workspace(workdir: str, prefix: str, images_per_class: int, size: str) -> tuple[Path, str, str]:
    """A benchmark's work directory (given, or a new temporary one), its synthetic data and its factory model.

    Returns (workdir, data root, model directory); the data is generated once per work directory.
    """
    import tempfile

    from reasonbed.data import synthetic
    from reasonbed.models.tiny import build_tiny_model

    directory = Path(workdir or tempfile.mkdtemp(prefix=prefix))
    data_root = directory / "data"
    if not data_root.exists():
        synthetic.generate(str(data_root), images_per_class=images_per_class)
    model_dir = str(build_tiny_model("qwen2_vl", size))
    print(f"workdir {directory}")
    return directory, str(data_root), model_dir


def write_bench_results(path: str, args: argparse.Namespace, rounds: list[dict[str, Any]],
                        median: dict[str, Any]) -> None:
    """A benchmark's `--json` file: its arguments, every round and the medians (nothing when `path` is empty)."""
    if path:
        Path(path).write_text(json.dumps({"args": vars(args), "rounds": rounds, "median": median}, indent=2))
