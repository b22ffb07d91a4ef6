"""Shared plumbing of every command: the `Command` record, the standard options, config resolution, dispatch.

A command is one module of reasonbed.cli exposing a `COMMAND`: how it adds its options to a parser,
how it resolves parsed arguments into a validated config (a config dataclass or a plain mapping)
without starting anything, and how it runs that config. Every command thus takes
  --dry-run      parse, resolve and validate everything, print the resolved config as YAML (secrets
                 redacted), start nothing (no Ray, no model, no data, no network), exit 0;
  --help-config  every config key with type, default and help text (reasonbed.cli.confighelp).
Config commands also take `--config FILE` (repeatable), their own short flags (each mapped to a
config key), `--smoke-test` and trailing `key=value` overrides; precedence is smoke defaults < files <
flags < overrides. Config and input errors print one line `error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reasonbed.config import ConfigError, load

T = TypeVar("T")
CONFIG_ERROR = 2  # exit status of a bad config or input


@dataclass(frozen=True)
class Command:
    """One subcommand of `reasonbed`, and the body of a jobs/*.py entry point."""

    name: str  # the subcommand, e.g. "train"
    summary: str  # one line for `reasonbed --help`
    doc: str  # the description of its --help (with the commands for one machine and for a cluster)
    configure: Callable[[argparse.ArgumentParser], None]  # adds the command's own options to a parser
    resolve: Callable[[argparse.Namespace], Any]  # parsed arguments -> validated config; starts nothing
    execute: Callable[[Any, argparse.Namespace], int]  # runs a resolved config; returns the exit status
    config_keys: Callable[[], list[Any]] | None = None  # its --help-config rows (None: its options)


def add_standard_options(parser: argparse.ArgumentParser) -> None:
    """--dry-run and --help-config, which every command and job takes."""
    parser.add_argument("--dry-run", action="store_true",
                        help="resolve and validate the whole config, print it as YAML and start nothing")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config key with its type, default and help text, then exit")


def add_config_options(parser: argparse.ArgumentParser, flags: Mapping[str, str], gpu_key: str = "",
                       gpu_help: str = "") -> None:
    """--config, --smoke-test, one `--<dest>` option per entry of `flags` (dest -> key), --gpu, overrides."""
    parser.add_argument("--config", action="append", default=[], help="YAML config file (repeatable)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="run on the embedded default: tiny model, synthetic data, local Ray, CPU")
    for dest, key in flags.items():
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, default=None, help=f"sets {key}")
    if gpu_key:
        parser.add_argument("--gpu", action="store_true", help=f"{gpu_help} (sets {gpu_key}=true)")
    parser.set_defaults(gpu_key=gpu_key)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. optim.lr=1e-4")


def comma_list(text: str, kind: type = str) -> list[Any]:
    """`a,b, c` -> ["a", "b", "c"] (or ints with kind=int)."""
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def resolve_config(cls: type[T], args: argparse.Namespace, flags: Mapping[str, str],
                   smoke: Mapping[str, Any] | None = None, first: Sequence[str] = ()) -> T:
    """Build the config: smoke defaults (if --smoke-test), files, `first` overrides, flags, overrides."""
    import json

    from_flags = [f"{key}={getattr(args, dest)}" for dest, key in flags.items()
                  if getattr(args, dest, None) is not None]
    if getattr(args, "gpu", False) and getattr(args, "gpu_key", ""):
        from_flags.append(f"{args.gpu_key}={json.dumps(True)}")
    return load(cls, args.config, [*first, *from_flags, *args.overrides],
                base=smoke if args.smoke_test else None)


def temporary_path(prefix: str) -> str:
    """A fresh path under the temporary directory, not yet created (resolving writes nothing)."""
    return str(Path(tempfile.gettempdir()) / f"{prefix}{uuid.uuid4().hex[:8]}")


def build_parser(command: Command, prog: str | None = None, doc: str | None = None) -> argparse.ArgumentParser:
    """The stand-alone parser of one command (jobs/*.py use it with their own docstring)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc or command.doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser, command)
    return parser


def configure(parser: argparse.ArgumentParser, command: Command) -> None:
    """The command's own options plus the standard ones; the parser remembers its command."""
    command.configure(parser)
    add_standard_options(parser)
    parser.set_defaults(_command=command, _parser=parser)


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command: --help-config, --dry-run or the real thing; bad input exits 2 with one line."""
    from reasonbed.cli import confighelp
    from reasonbed.cli.resolved import to_yaml

    command: Command = args._command
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.help_config:
            rows = command.config_keys() if command.config_keys else confighelp.option_keys(args._parser)
            print(confighelp.format_keys(rows))
            return 0
        resolved = command.resolve(args)
        if args.dry_run:
            print(to_yaml(resolved, f"reasonbed {command.name}: resolved config (dry run: nothing started)"))
            return 0
        return int(command.execute(resolved, args) or 0)
    except (ConfigError, ValueError, KeyError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return CONFIG_ERROR


def run_command(command: Command, argv: Sequence[str] | None = None, prog: str | None = None,
                doc: str | None = None) -> int:
    """Parse `argv` for one command and dispatch it (what jobs/*.py and `reasonbed <command>` do)."""
    return dispatch(build_parser(command, prog, doc).parse_args(argv))
