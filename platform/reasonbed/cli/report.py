"""`reasonbed report RUN`: report.md, a self-contained report.html and trials.csv/parquet of a sweep folder.

    reasonbed report runs/<sweep>                    # -> runs/<sweep>/report/
    reasonbed report s3://bucket/sweeps/<sweep>      # -> ./runs/<sweep>/report/
    reasonbed report runs/<sweep> --out /tmp/report  # anywhere else
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reasonbed.cli.base import Command
from reasonbed.config import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="RUN", nargs="?", help="sweep folder (local path or s3://.../<sweep>)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: RUN/report; ./runs/<sweep>/report for s3://)")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    from reasonbed import storage

    if not args.sweep:
        raise ConfigError("RUN: the sweep folder to report on is required (a local path or s3://.../<sweep>)")
    if args.out:
        out = args.out
    elif storage.is_remote(args.sweep):
        out = None  # ./runs/<the sweep's name>/report: the name is read from its sweep.json when run
    else:
        out = str(Path(args.sweep) / "report")
    return {"sweep": args.sweep, "out": out}


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed.report.build import build_report
    from reasonbed.tune.records import read_sweep

    sweep, out = resolved["sweep"], resolved["out"]
    if out is None:
        name = read_sweep(sweep).get("name") or sweep.rstrip("/").rsplit("/", 1)[-1]
        out = str(Path("runs") / name / "report")
    page = build_report(sweep, Path(out))
    print(json.dumps({"html": str(page), "markdown": str(page.with_name("report.md")),
                      "trials": str(page.with_name("trials.csv"))}))
    return 0


COMMAND = Command(name="report", summary="write report.md, report.html and trials.csv/parquet of a sweep",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute)
