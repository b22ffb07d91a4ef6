"""`reasonbed splits`: print the leave-one-domain-out splits of a dataset (sizes per part).

    reasonbed splits dataset=pacs root=/data/PACS
    reasonbed splits dataset=folder root=/data/MyDomains holdout_fraction=0.1

Overrides are keys of reasonbed.data.catalog.DataConfig (no `data.` prefix here; --help-config lists them).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reasonbed.cli.base import Command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], help="YAML file with DataConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dataset=pacs root=/data/PACS")


def resolve(args: argparse.Namespace) -> Any:
    from reasonbed.cli.checks import data_spec
    from reasonbed.config import load
    from reasonbed.data.catalog import DataConfig

    cfg = load(DataConfig, args.config, args.overrides)
    data_spec(cfg)
    return cfg


def execute(cfg: Any, args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed.data import catalog
    from reasonbed.data.reader import scan
    from reasonbed.data.splits import all_lodo_splits

    spec, root = catalog.resolve(cfg)
    index = scan(spec, root, storage_options=cfg.storage_options)
    splits = all_lodo_splits(spec, index, cfg.holdout_fraction, cfg.split_seed)
    print(json.dumps({domain: split.summary() for domain, split in splits.items()}, indent=2))
    return 0


def config_keys() -> list[Any]:
    from reasonbed.cli.confighelp import describe
    from reasonbed.data.catalog import DataConfig

    return describe(DataConfig)


COMMAND = Command(name="splits", summary="print LODO split sizes for a data config", doc=__doc__,
                  configure=configure, resolve=resolve, execute=execute, config_keys=config_keys)
