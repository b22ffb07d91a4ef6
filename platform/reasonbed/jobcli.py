"""Shared command-line plumbing for the scripts in jobs/: config files, flags and key=value overrides.

Also the shared set-up of the jobs/bench_*.py benchmarks (work directory, synthetic data, factory model).

Every job accepts `--config FILE` (repeatable), its own short flags (each mapped to a config key),
`--smoke-test`, and trailing `key=value` overrides; precedence is smoke defaults < files < flags <
overrides. Errors in config are printed as one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from reasonbed.config import ConfigError, load

T = TypeVar("T")


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="YAML config file (repeatable)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="run on the embedded default: tiny model, synthetic data, local Ray, CPU")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. engine.actors=2")
    return parser


def flag_parser(doc: str | None, flags: Mapping[str, str], gpu_help: str = "") -> argparse.ArgumentParser:
    """`base_parser` plus one `--<dest>` option per entry of `flags` (dest -> config key), and `--gpu` if helped."""
    parser = base_parser(doc)
    for dest, key in flags.items():
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, default=None, help=f"sets {key}")
    if gpu_help:
        parser.add_argument("--gpu", action="store_true", help=f"{gpu_help} (sets scale.use_gpu=true)")
    return parser


def parse_job_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; `--gpu`, when the parser has it, becomes the override scale.use_gpu=true."""
    args = parser.parse_args(argv)
    if getattr(args, "gpu", False):
        args.overrides.append("scale.use_gpu=true")
    return args


def resolve_config(cls: type[T], args: argparse.Namespace, flags: Mapping[str, str],
                   smoke: Mapping[str, Any] | None = None) -> T:
    """Build the config: smoke defaults (if --smoke-test), files, flags (dest -> key), overrides."""
    from_flags = [f"{key}={getattr(args, dest)}" for dest, key in flags.items()
                  if getattr(args, dest, None) is not None]
    return load(cls, args.config, [*from_flags, *args.overrides], base=smoke if args.smoke_test else None)


def run_job(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a job's main with logging set up; config and input errors exit 2 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return main(argv)
    except (ConfigError, ValueError, KeyError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


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
    import json

    if path:
        Path(path).write_text(json.dumps({"args": vars(args), "rounds": rounds, "median": median}, indent=2))
