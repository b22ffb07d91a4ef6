"""`reasonbed dashboard RUN`: optuna-dashboard and TensorBoard of a sweep folder, on 127.0.0.1 by default.

    reasonbed dashboard runs/<sweep>
    reasonbed dashboard runs/<sweep> --optuna-port 8081 --tensorboard-port 6007

Both have no authentication: reach them from elsewhere through an SSH tunnel, not `--host 0.0.0.0`.
Ctrl-C stops both (see reasonbed.report.dashboard).
"""

from __future__ import annotations

import argparse
from typing import Any

from reasonbed.cli.base import Command
from reasonbed.config import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="RUN", nargs="?", help="sweep folder (local path or s3://.../<sweep>)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; no auth!)")
    parser.add_argument("--optuna-port", type=int, default=8080, help="optuna-dashboard's port")
    parser.add_argument("--tensorboard-port", type=int, default=6006, help="TensorBoard's port")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    if not args.sweep:
        raise ConfigError("RUN: the sweep folder is required (a local path or s3://.../<sweep>)")
    for key in ("optuna_port", "tensorboard_port"):
        if not 0 < getattr(args, key) < 65536:
            raise ConfigError(f"--{key.replace('_', '-')}: port {getattr(args, key)} is not in 1..65535")
    return {"sweep": args.sweep, "host": args.host, "optuna_port": args.optuna_port,
            "tensorboard_port": args.tensorboard_port}


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed.report.dashboard import run_dashboard

    return run_dashboard(resolved["sweep"], host=resolved["host"], optuna_port=resolved["optuna_port"],
                         tensorboard_port=resolved["tensorboard_port"])


COMMAND = Command(name="dashboard", summary="serve optuna-dashboard and TensorBoard for a sweep folder",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute)
