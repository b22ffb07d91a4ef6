"""Command line: `python -m reasonbed <command>`.

Commands:
  tiny-model   build (or reuse from the cache) an offline tiny MLLM in Hugging Face format
  make-data    write an offline benchmark (synthetic_shapes, rotated_digits) in DomainBed layout
  splits       print the leave-one-domain-out splits of a dataset (sizes per part)
  install-startup-hook   write the torchvision fix's .pth startup file into site-packages
  report       Markdown + self-contained HTML report and trials.csv/parquet of a sweep folder
  dashboard    optuna-dashboard and TensorBoard of a sweep folder on 127.0.0.1 (Ctrl-C stops them)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def _tiny_model(args: argparse.Namespace) -> int:
    from reasonbed.models.tiny import build_tiny_model

    path = build_tiny_model(args.family, size=args.size, out=args.out, seed=args.seed)
    print(path)
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from reasonbed.data import catalog

    if args.dataset not in catalog.OFFLINE_GENERATORS:
        raise SystemExit(f"make-data: unknown offline dataset {args.dataset!r}; "
                         f"choose from {', '.join(catalog.OFFLINE_GENERATORS)}")
    generate = catalog.OFFLINE_GENERATORS[args.dataset]
    if args.dataset == "synthetic_shapes":
        spec = generate(args.out, images_per_class=args.images, image_size=args.image_size, seed=args.seed)
    else:
        spec = generate(args.out, images_per_domain=args.images, image_size=args.image_size, seed=args.seed)
    print(json.dumps({"dataset": spec.name, "root": args.out, "domains": spec.domains, "classes": spec.classes}))
    return 0


def _splits(args: argparse.Namespace) -> int:
    from reasonbed.config import load
    from reasonbed.data import catalog
    from reasonbed.data.reader import scan
    from reasonbed.data.splits import all_lodo_splits

    cfg = load(catalog.DataConfig, args.config or (), args.overrides)
    spec, root = catalog.resolve(cfg)
    index = scan(spec, root, storage_options=cfg.storage_options)
    splits = all_lodo_splits(spec, index, cfg.holdout_fraction, cfg.split_seed)
    print(json.dumps({domain: split.summary() for domain, split in splits.items()}, indent=2))
    return 0


def _startup_hook(args: argparse.Namespace) -> int:
    from reasonbed.compat import torchvision_fix

    if args.uninstall:
        torchvision_fix.uninstall_startup_file()
        print(f"removed {torchvision_fix.startup_file()}")
    else:
        print(f"wrote {torchvision_fix.install_startup_file()}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reasonbed import storage
    from reasonbed.report.build import build_report
    from reasonbed.tune.records import read_sweep

    out = args.out
    if out is None:
        if storage.is_remote(args.sweep):
            name = read_sweep(args.sweep).get("name") or args.sweep.rstrip("/").rsplit("/", 1)[-1]
            out = Path("runs") / name / "report"
        else:
            out = Path(args.sweep) / "report"
    page = build_report(args.sweep, out)
    print(json.dumps({"html": str(page), "markdown": str(page.with_name("report.md")),
                      "trials": str(page.with_name("trials.csv"))}))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from reasonbed.report.dashboard import run_dashboard

    return run_dashboard(args.sweep, host=args.host, optuna_port=args.optuna_port,
                         tensorboard_port=args.tensorboard_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasonbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("tiny-model", help="build an offline tiny MLLM (cached by config hash)")
    tiny.add_argument("--family", default="qwen2_vl")
    tiny.add_argument("--size", default="tiny", choices=("tiny", "small"))
    tiny.add_argument("--out", default=None, help="output directory (default: the reasonbed cache)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=_tiny_model)

    data = commands.add_parser("make-data", help="write an offline benchmark in DomainBed layout")
    data.add_argument("--dataset", default="synthetic_shapes")
    data.add_argument("--out", required=True, help="root to write (local path or s3://)")
    data.add_argument("--images", type=int, default=12, help="images per (domain, class) / per domain (digits)")
    data.add_argument("--image-size", type=int, default=56)
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(run=_make_data)

    splits = commands.add_parser("splits", help="print LODO split sizes for a data config")
    splits.add_argument("--config", action="append", help="YAML file with DataConfig fields")
    splits.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dataset=pacs root=/data/PACS")
    splits.set_defaults(run=_splits)

    hook = commands.add_parser("install-startup-hook",
                               help="make every Python process of this environment apply the torchvision fix")
    hook.add_argument("--uninstall", action="store_true")
    hook.set_defaults(run=_startup_hook)

    report = commands.add_parser("report", help="write report.md, report.html and trials.csv/parquet of a sweep")
    report.add_argument("sweep", metavar="RUN", help="sweep folder (local path or s3://.../<sweep>)")
    report.add_argument("--out", default=None,
                        help="output folder (default: RUN/report; ./runs/<sweep>/report for s3://)")
    report.set_defaults(run=_report)

    dash = commands.add_parser("dashboard", help="serve optuna-dashboard and TensorBoard for a sweep folder")
    dash.add_argument("sweep", metavar="RUN", help="sweep folder (local path or s3://.../<sweep>)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; no auth!)")
    dash.add_argument("--optuna-port", type=int, default=8080)
    dash.add_argument("--tensorboard-port", type=int, default=6006)
    dash.set_defaults(run=_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
