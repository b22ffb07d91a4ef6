"""Shared command-line plumbing for the scripts in jobs/: config files, flags and key=value overrides.

Every job accepts `--config FILE` (repeatable), its own short flags (each mapped to a config key),
`--smoke-test`, and trailing `key=value` overrides; precedence is smoke defaults < files < flags <
overrides. Errors in config are printed as one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
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
