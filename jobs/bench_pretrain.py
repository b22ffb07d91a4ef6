"""Benchmark: the tiny model's pretraining in one process, in the recipe's data-parallel processes, and with
those processes replayed in one.

Builds the qwen2_vl `tiny` model from scratch with the factory's recipe three ways - `processes=1`; the recipe's
own count (2); the recipe's 2 replayed in one process (`in_one_process`, the test suite's build) - alternating for
`--rounds`, each into a fresh folder (nothing cached), and prints each build's wall and CPU seconds (this process
and its helper processes), the ratios of the medians (data-parallel / one process: 0.71, 0.94 and 0.75 of the
wall time in three runs on 2 cores, docs/benchmarks.md; replayed / data-parallel: wall and CPU), the largest
difference between the one-process and the data-parallel weights (the same math in another float summation
order: 1.5e-6 after the smoke test's 7 steps, 1.7e-3 after the build's 2,300; the zero-shot figures of
docs/training.md are the same to the digit) and whether the replayed build wrote the data-parallel one's bytes.

One machine (about 8 minutes per round on 2 cores; --smoke-test: a few steps, seconds):
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


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its children that ended (the helper replicas)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _build(folder: Path, recipe: Any, in_one_process: bool) -> tuple[float, float, Path]:
    """Wall seconds, CPU seconds and the folder of one build."""
    from reasonbed.models.tiny import build_tiny_model

    started, cpu = time.perf_counter(), _cpu_seconds()
    built = build_tiny_model("qwen2_vl", out=folder, recipe=recipe, progress=lambda line: None,
                             in_one_process=in_one_process)
    return time.perf_counter() - started, _cpu_seconds() - cpu, built


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


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
    from reasonbed.models.tiny import largest_weight_difference

    parallel, one = _recipe(args.smoke_test, PretrainRecipe().processes), _recipe(args.smoke_test, 1)
    kinds = {"one": (one, False), "parallel": (parallel, False), "replayed": (parallel, True)}
    wall: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    rounds: list[dict[str, Any]] = []
    difference, identical = 0.0, True
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as folder:
        for round_ in range(args.rounds):
            built = {}
            for kind, (recipe, in_one_process) in kinds.items():
                took, used, built[kind] = _build(Path(folder) / f"{round_}-{kind}", recipe, in_one_process)
                wall[kind].append(round(took, 1))
                cpu[kind].append(round(used, 1))
                print(f"round {round_ + 1}: {kind} ({recipe.processes} process(es)"
                      f"{', replayed in one' if in_one_process else ''}) {took:.1f} s, CPU {used:.1f} s", flush=True)
            rounds.append({**{f"seconds_{kind}": wall[kind][-1] for kind in kinds},
                           **{f"cpu_seconds_{kind}": cpu[kind][-1] for kind in kinds},
                           "largest_weight_difference": largest_weight_difference(built["one"], built["parallel"]),
                           "replayed_identical": _sha(built["replayed"]) == _sha(built["parallel"])})
            difference = max(difference, rounds[-1]["largest_weight_difference"])
            identical = identical and rounds[-1]["replayed_identical"]
    median = {kind: (statistics.median(wall[kind]), statistics.median(cpu[kind])) for kind in kinds}
    ratios = {"ratio": median["parallel"][0] / median["one"][0],
              "replayed_wall_ratio": median["replayed"][0] / median["parallel"][0],
              "replayed_cpu_ratio": median["replayed"][1] / median["parallel"][1]}
    print(f"data-parallel ({parallel.processes} processes) / one process: {ratios['ratio']:.2f} of the time; largest "
          f"weight difference {difference:.2e}")
    print(f"replayed in one process / data-parallel: {ratios['replayed_wall_ratio']:.2f} of the time, "
          f"{ratios['replayed_cpu_ratio']:.2f} of the CPU; the same bytes: {identical}")
    write_bench_results(args.json, args, rounds, {
        **{f"seconds_{kind}": value[0] for kind, value in median.items()},
        **{f"cpu_seconds_{kind}": value[1] for kind, value in median.items()},
        **{key: round(value, 3) for key, value in ratios.items()}, "replayed_identical": identical})
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
