"""Benchmark: the tiny model's pretraining in one process against the recipe's data-parallel processes.

Builds the qwen2_vl `tiny` model from scratch with the factory's recipe, once with `processes=1` and once with
the recipe's own count (2), alternating for `--rounds`, each into a fresh folder (nothing cached), and prints
each build's seconds, the ratio of the medians (data-parallel / one process; 0.71, 0.94 and 0.75 in three runs on 2
cores, docs/benchmarks.md) and the largest difference between the two models' weights (the same math in another
float summation order: 1.5e-6 after the smoke test's 7 steps, 1.7e-3 after the build's 2,300; the zero-shot
figures of docs/training.md are the same to the digit).

One machine (about 6 minutes per round on 2 cores; --smoke-test: a few steps, seconds):
    python jobs/bench_pretrain.py
    python jobs/bench_pretrain.py --rounds 2 --json bench-pretrain.json
    python jobs/bench_pretrain.py --smoke-test
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from bench_common import parse, write_bench_results  # noqa: E402


def _recipe(smoke: bool, processes: int) -> Any:
    from reasonbed.models.corpus import CorpusSpec
    from reasonbed.models.pretrain import PretrainRecipe

    recipe = PretrainRecipe()
    if smoke:  # every stage, in seconds
        recipe = dataclasses.replace(recipe, corpus=CorpusSpec(shape_images=24, digit_images=8, option_lists=2),
                                     vision_steps=3, vision_batch_size=8, steps=4, batch_size=4, warmup_steps=1)
    return dataclasses.replace(recipe, processes=processes)


def _build(folder: Path, recipe: Any) -> tuple[float, Path]:
    from reasonbed.models.tiny import build_tiny_model

    started = time.perf_counter()
    built = build_tiny_model("qwen2_vl", out=folder, recipe=recipe, progress=lambda line: None)
    return time.perf_counter() - started, built


def _largest_difference(first: Path, second: Path) -> float:
    from safetensors.torch import load_file

    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def _check(args: argparse.Namespace) -> None:
    if args.rounds < 1:
        raise ValueError(f"--rounds {args.rounds}: must be >= 1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="builds of each kind, alternating")
    parser.add_argument("--smoke-test", action="store_true", help="a few steps of each stage: checks this script")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parse(parser, argv, _check)
    from reasonbed.models.pretrain import PretrainRecipe

    parallel, one = _recipe(args.smoke_test, PretrainRecipe().processes), _recipe(args.smoke_test, 1)
    seconds: dict[int, list[float]] = {1: [], parallel.processes: []}
    rounds: list[dict[str, Any]] = []
    difference = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as folder:
        for round_ in range(args.rounds):
            built = {}
            for recipe in (one, parallel):
                took, built[recipe.processes] = _build(Path(folder) / f"{round_}-{recipe.processes}", recipe)
                seconds[recipe.processes].append(round(took, 1))
                print(f"round {round_ + 1}: {recipe.processes} process(es) {took:.1f} s", flush=True)
            rounds.append({f"seconds_{count}": seconds[count][-1] for count in seconds})
            rounds[-1]["largest_weight_difference"] = _largest_difference(built[1], built[parallel.processes])
            difference = max(difference, rounds[-1]["largest_weight_difference"])
    ratio = statistics.median(seconds[parallel.processes]) / statistics.median(seconds[1])
    print(f"data-parallel ({parallel.processes} processes) / one process: {ratio:.2f} of the time; largest weight "
          f"difference {difference:.2e}")
    write_bench_results(args.json, args, rounds, {**{f"seconds_{count}": statistics.median(values)
                                                     for count, values in seconds.items()}, "ratio": round(ratio, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
