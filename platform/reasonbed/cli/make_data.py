"""`reasonbed make-data`: write an offline benchmark (synthetic_shapes, rotated_digits) in DomainBed layout.

    reasonbed make-data --dataset synthetic_shapes --out /tmp/shapes --images 12
    reasonbed make-data --dataset rotated_digits --out s3://bucket/digits
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reasonbed.cli.base import Command
from reasonbed.config import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="synthetic_shapes", help="synthetic_shapes or rotated_digits")
    parser.add_argument("--out", default=None, help="root to write (local path or s3://)")
    parser.add_argument("--images", type=int, default=12, help="images per (domain, class) / per domain (digits)")
    parser.add_argument("--image-size", type=int, default=56, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    from reasonbed.data import catalog

    if args.dataset not in catalog.OFFLINE_GENERATORS:
        raise ConfigError(f"--dataset: unknown offline dataset {args.dataset!r}; "
                          f"choose from {', '.join(catalog.OFFLINE_GENERATORS)}")
    if not args.out:
        raise ConfigError("--out: the root to write is required (a local path or s3://)")
    if args.images < 1 or args.image_size < 1:
        raise ConfigError(f"--images ({args.images}) and --image-size ({args.image_size}) must be >= 1")
    return {"dataset": args.dataset, "out": args.out, "images": args.images, "image_size": args.image_size,
            "seed": args.seed}


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed.data import catalog

    generate = catalog.OFFLINE_GENERATORS[resolved["dataset"]]
    count = "images_per_class" if resolved["dataset"] == "synthetic_shapes" else "images_per_domain"
    spec = generate(resolved["out"], **{count: resolved["images"]}, image_size=resolved["image_size"],
                    seed=resolved["seed"])
    print(json.dumps({"dataset": spec.name, "root": resolved["out"], "domains": spec.domains,
                      "classes": spec.classes}))
    return 0


COMMAND = Command(name="make-data", summary="write an offline benchmark in DomainBed layout", doc=__doc__,
                  configure=configure, resolve=resolve, execute=execute)
