"""`reasonbed tiny-model`: build (or reuse from the cache) an offline tiny MLLM in Hugging Face format.

    reasonbed tiny-model --family qwen2_vl --size tiny --out DIR

Prints the model directory; without --out the model is cached in the reasonbed cache by its config hash.
"""

from __future__ import annotations

import argparse
from typing import Any

from reasonbed.cli.base import Command
from reasonbed.config import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", default="qwen2_vl", help="model family (reasonbed.models.families)")
    parser.add_argument("--size", default="tiny", choices=("tiny", "small"), help="tiny (<1M params) or small")
    parser.add_argument("--out", default=None, help="output directory (default: the reasonbed cache)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    from reasonbed.models.families import FAMILIES

    if args.family not in FAMILIES:
        raise ConfigError(f"--family: unknown model family {args.family!r}; known: {', '.join(FAMILIES.names())}")
    return {"family": args.family, "size": args.size, "out": args.out, "seed": args.seed}


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed.models.tiny import build_tiny_model

    print(build_tiny_model(resolved["family"], size=resolved["size"], out=resolved["out"], seed=resolved["seed"]))
    return 0


COMMAND = Command(name="tiny-model", summary="build an offline tiny MLLM (cached by config hash)", doc=__doc__,
                  configure=configure, resolve=resolve, execute=execute)
