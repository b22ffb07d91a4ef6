"""`reasonbed tiny-model`: build (or reuse from the cache) an offline tiny MLLM, then report what it knows.

    reasonbed tiny-model --family qwen2_vl --size tiny
    reasonbed tiny-model --dataset synthetic_shapes --dataset rotated_digits --chains 48
    reasonbed tiny-model --random --no-eval --out /tmp/tiny-random
    reasonbed tiny-model --no-eval --in-one-process

Prints the model directory (without --out the model is cached in the reasonbed cache by the hash of
its config and pretraining recipe; the first build of the pretrained tiny model takes a few minutes
and shows its progress), then, unless --no-eval, the zero-shot accuracy per domain of each --dataset
(default synthetic_shapes; greedy, classification prompt) and the share of valid five-tag chains among
greedy reasoning-prompt completions on --chains benchmark images, with their token lengths.
--in-one-process builds the same bytes as the recipe's data-parallel processes with about a quarter less CPU and
more wall time (the test suite's build, whose tests keep every core busy anyway).
"""

from __future__ import annotations

import argparse
from typing import Any

from reasonbed.cli.base import Command
from reasonbed.config import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", default="qwen2_vl", help="model family (reasonbed.models.families)")
    parser.add_argument("--size", default="tiny", choices=("tiny", "small"),
                        help="tiny (<1M params, pretrained) or small (random; throughput benchmarks)")
    parser.add_argument("--out", default=None, help="output directory (default: the reasonbed cache)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and pretraining-corpus seed")
    parser.add_argument("--random", action="store_true", help="the randomly initialised model (no pretraining)")
    parser.add_argument("--dataset", action="append", default=None,
                        help="offline benchmark to evaluate zero-shot on (repeatable; default synthetic_shapes)")
    parser.add_argument("--chains", type=int, default=48,
                        help="benchmark images to write greedy reasoning chains for (0: none)")
    parser.add_argument("--no-eval", action="store_true", help="only build the model and print its directory")
    parser.add_argument("--in-one-process", action="store_true",
                        help="replay the recipe's data-parallel processes in this one: the same model bytes, less CPU, "
                             "more wall time (for a machine whose cores are busy anyway)")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    from reasonbed.data.catalog import OFFLINE_GENERATORS
    from reasonbed.models.families import FAMILIES

    if args.family not in FAMILIES:
        raise ConfigError(f"--family: unknown model family {args.family!r}; known: {', '.join(FAMILIES.names())}")
    datasets = args.dataset or ["synthetic_shapes"]
    for dataset in datasets:
        if dataset not in OFFLINE_GENERATORS:
            raise ConfigError(f"--dataset: {dataset!r} is not an offline benchmark; "
                              f"choose from {', '.join(OFFLINE_GENERATORS)}")
    if args.seed < 0 or args.chains < 0:
        raise ConfigError(f"--seed ({args.seed}) and --chains ({args.chains}) must be >= 0")
    return {"family": args.family, "size": args.size, "out": args.out, "seed": args.seed,
            "pretrained": not args.random, "datasets": [] if args.no_eval else datasets, "chains": args.chains,
            "in_one_process": args.in_one_process}


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    from reasonbed.models.tiny import build_tiny_model

    path = build_tiny_model(resolved["family"], size=resolved["size"], out=resolved["out"], seed=resolved["seed"],
                            pretrained=resolved["pretrained"], in_one_process=resolved["in_one_process"])
    print(path, flush=True)
    if resolved["datasets"]:
        from reasonbed.evaluation.zeroshot import format_report, zero_shot
        from reasonbed.models.configs import ModelConfig
        from reasonbed.models.loading import load_model_and_processor

        model, processor = load_model_and_processor(ModelConfig(family=resolved["family"], path=str(path)))
        for dataset in resolved["datasets"]:
            print(format_report(zero_shot(model, processor, dataset, chains=resolved["chains"])), flush=True)
    return 0


COMMAND = Command(name="tiny-model", summary="build an offline tiny MLLM (cached) and print its zero-shot accuracy",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute)
