"""`reasonbed report RUN`: report.md, a self-contained report.html and trials.csv/parquet of a sweep folder.

The report is rebuilt from what the sweep storage holds, on any machine, and written next to the
sweep (`RUN/report/`, uploaded for s3://) unless --out gives a local folder instead:
    reasonbed report runs/<sweep>                         # -> runs/<sweep>/report/
    reasonbed report s3://bucket/sweeps/<sweep>           # -> s3://bucket/sweeps/<sweep>/report/
    reasonbed report s3://bucket/sweeps/<sweep> --out DIR # -> DIR only (a local copy; e.g. a read-only bucket)
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
                        help="write the report into this local folder instead of RUN/report (RUN is not written)")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    if not args.sweep:
        raise ConfigError("RUN: the sweep folder to report on is required (a local path or s3://.../<sweep>)")
    return {"sweep": args.sweep, "out": args.out}


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed import storage
    from reasonbed.report.build import build_report, publish_report

    sweep, out = resolved["sweep"], resolved["out"]
    page = str(build_report(sweep, Path(out))) if out else publish_report(sweep)
    folder = page.rsplit("/", 1)[0]
    print(json.dumps({"html": page, "markdown": storage.join(folder, "report.md"),
                      "trials": storage.join(folder, "trials.csv")}))
    return 0


COMMAND = Command(name="report", summary="write report.md, report.html and trials.csv/parquet of a sweep",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute)
