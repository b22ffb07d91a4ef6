"""Benchmark generation throughput: raw vLLM, the Ray Data pipeline (async and offline engine, 1 and 2
actors), and HF generate.

On one set of prompts (synthetic images, the reasoning prompt, n candidates, the pipeline's
per-request seeds) and one model (the factory's `small` Qwen2-VL by default), each round measures
completion tokens per second of
  (a) raw `vllm.LLM.generate` in one process (subprocesses of this script, so their ~3 GB are
      freed before (b)), timed around the `generate` calls only, each on a fresh engine (no prefix
      cache shared between the two, and a cold first call, as in the actor): every prompt in one
      call (a1, the reference), and the pipeline's batches, one call each (a2);
  (b) `run_generation` with engine vllm as the platform runs it (vLLM's async engine,
      engine.batches_in_flight batches in the actor's engine at once) and 1 actor; (b2) the same with
      2 actors; (bs) with the offline engine (engine.vllm_async=false: one batch per `LLM.generate`
      call), 1 actor. Each is timed from the start of its actors' first batch task (Ray's own task
      events, via the state API) to the moment the last shard has all its rows at the driver: every
      per-batch cost of the pipeline (Ray Data scheduling, image loading, transfers, judging, building
      rows, delivering them to the driver) is inside; the one-time start (Ray Data start-up, vLLM
      engine construction in the actors' __init__) is not, and is printed separately, as are tokens/s
      per engine (the engine time charged to the rows), how busy the actors' batch tasks kept them, the
      most batch tasks one actor ran at once, and end-to-end tokens/s over the whole call;
  (c) the `hf` engine (batched transformers `generate`, the same batches, fresh model) in a
      subprocess, timed around its `generate` calls;
then the ratios. Targets: b/a1 >= 0.9 (the pipeline against one raw call over every prompt) and
b/c >= 2; b2/b is the scaling from 1 to 2 actors. Rounds alternate the stages; medians are reported.
Every stage runs with the same CPU threads per engine (--threads, default 1, which is what the
pipeline's default engine.num_cpus=1 gives an actor); (a) runs vLLM in one process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, as the offline engine inside Ray actors), while the async engine
runs its engine core in a child process of the actor, with the same thread count, its front end (image
processing, detokenising) beside it in the actor, as vLLM's async engine is built. No timing
assertions: a measurement.

One machine (about 15 minutes for the defaults on 2 cores):
    python jobs/bench_generation.py
    python jobs/bench_generation.py --smoke-test           # tiny model, 24 images, 16 tokens, 1 round
    python jobs/bench_generation.py --threads 2 --batch-size 12 --skip-hf --json bench-gen.json
On a GPU machine, and on a cluster (the raw and HF stages are subprocesses of the driver, so the
driver takes a GPU of its own with --entrypoint-num-gpus; each of the pipeline's actors takes another
one, which should be of the same type):
    python jobs/bench_generation.py --num-gpus 1 --images-per-class 8 --max-tokens 256
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml --entrypoint-num-gpus 1 \
        -- python jobs/bench_generation.py --num-gpus 1 --images-per-class 8 --max-tokens 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from bench_common import bench_workspace, parse, write_bench_results  # noqa: E402

TARGET_B_OVER_A1 = 0.9  # the pipeline against one raw vLLM call over every prompt
TARGET_B_OVER_C = 2.0  # the pipeline against HF generate


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-test", action="store_true", help="tiny model, 24 images, 16 tokens")
    parser.add_argument("--size", default="small", choices=("tiny", "small"), help="factory model size")
    parser.add_argument("--images-per-class", type=int, default=2, help="per (domain, class): 4 x 6 x this images")
    parser.add_argument("--n", type=int, default=2, help="candidates per image")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=6,
                        help="images per engine call (and per shard); must divide the images per domain")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--max-num-batched-tokens", type=int, default=32768,
                        help="vLLM's tokens per step, (a) and (b) alike: high enough that no prompt is prefilled "
                             "in chunks (vLLM on CPU crashes on a seeded request whose prefill is chunked)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (OMP_NUM_THREADS) of every stage; the pipeline's actor gets as many "
                             "Ray CPUs (the default engine.num_cpus=1 gives its actor 1 thread)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs of the pipeline's engine actor")
    parser.add_argument("--batches-in-flight", type=int, default=None,
                        help="engine.batches_in_flight of (b) and (b2) (default: the platform's)")
    parser.add_argument("--skip-hf", action="store_true", help="skip (c)")
    parser.add_argument("--skip-sync", action="store_true", help="skip (bs), the pipeline with the offline engine")
    parser.add_argument("--skip-two-actors", action="store_true", help="skip (b2), the pipeline with 2 actors")
    parser.add_argument("--rounds", type=int, default=3,
                        help="repeat every stage this many times, alternating; medians are reported")
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--workdir", default="", help="data and outputs (default: a temporary directory)")
    parser.add_argument("--stage-worker", default="", help=argparse.SUPPRESS)  # internal: run (a) or (c)

    def resolve(args: argparse.Namespace) -> None:
        if args.smoke_test:
            args.size, args.images_per_class, args.max_tokens, args.batch_size, args.rounds = "tiny", 1, 16, 3, 1
        if (6 * args.images_per_class) % args.batch_size:
            raise ValueError(f"--batch-size {args.batch_size} must divide the {6 * args.images_per_class} "
                             "images per domain")
        sampling_config(args)  # checks n, temperature and max_tokens

    return parse(parser, argv, resolve)


def sampling_config(args: argparse.Namespace) -> Any:
    from reasonbed.inference.base import SamplingConfig

    return SamplingConfig(n=args.n, temperature=args.temperature, top_p=0.95, max_tokens=args.max_tokens,
                          seed=args.seed)


def batches_of_requests(data_root: str, batch_size: int) -> list[list[Any]]:
    """The pipeline's batches (its shard plan), as engine requests with the pipeline's prompt and seeds."""
    from PIL import Image

    from reasonbed.data import synthetic
    from reasonbed.data.reader import scan
    from reasonbed.generation.shards import plan_shards
    from reasonbed.inference.base import Request
    from reasonbed.prompts import reasoning_prompt

    spec = synthetic.SPEC
    prompt = reasoning_prompt(spec.display_names)
    batches = []
    for shard in plan_shards(scan(spec, data_root), batch_size):
        batches.append([Request(Image.open(Path(data_root) / row["path"]).convert("RGB"), prompt,
                                {"id": row["id"], "candidate_offset": 0}) for row in shard.rows])
    return batches


def raw_vllm_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """(a), run in its own process: vLLM's LLM on the same prompts, params and seeds as the engine."""
    from vllm import LLM, SamplingParams

    from reasonbed.inference.vllm_engine import request_seed
    from reasonbed.models.configs import ModelConfig
    from reasonbed.models.encoding import build_chat_prompt
    from reasonbed.models.loading import load_processor

    processor = load_processor(ModelConfig(path=spec["model"]), spec["model"])
    started = time.perf_counter()
    llm = LLM(model=spec["model"], dtype="float32", max_model_len=spec["max_model_len"],
              limit_mm_per_prompt={"image": 1}, enforce_eager=spec["num_gpus"] == 0, seed=0,
              max_num_batched_tokens=spec["max_num_batched_tokens"])
    init_s = time.perf_counter() - started
    args = argparse.Namespace(**spec["sampling"])
    sampling = sampling_config(args)

    def inputs(batch: list[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
        prompts = [{"prompt": build_chat_prompt(processor, r.prompt), "multi_modal_data": {"image": r.image}}
                   for r in batch]
        params = [SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_tokens,
                                 seed=request_seed(sampling.seed, f"{r.meta['id']}/0")) for r in batch]
        return prompts, params

    def tokens(outputs: list[Any]) -> int:
        return sum(len(choice.token_ids) for output in outputs for choice in output.outputs)

    batches = batches_of_requests(spec["data_root"], spec["batch_size"])
    if spec["kind"] == "raw-one-call":
        batches = [[request for batch in batches for request in batch]]
    total, seconds = 0, 0.0
    for batch in batches:
        started = time.perf_counter()
        total += tokens(llm.generate(*inputs(batch), use_tqdm=False))
        seconds += time.perf_counter() - started
    return {"init_s": init_s, "tokens": total, "seconds": seconds}


def stage_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment every stage runs with: the same thread count, vLLM in one process."""
    return {"OMP_NUM_THREADS": str(args.threads), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


def run_stage(kind: str, model_dir: str, data_root: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run (a) or (c) in a fresh subprocess of this script (its memory is freed when it exits)."""
    with tempfile.TemporaryDirectory(prefix=f"reasonbed-bench-{kind}-") as directory:
        result_file = Path(directory) / "result.json"
        spec = {"kind": kind, "model": model_dir, "data_root": data_root, "batch_size": args.batch_size,
                "result": str(result_file), "max_model_len": args.max_model_len, "num_gpus": args.num_gpus,
                "max_num_batched_tokens": args.max_num_batched_tokens,
                "sampling": {"n": args.n, "temperature": args.temperature, "max_tokens": args.max_tokens,
                             "seed": args.seed}}
        load_before = os.getloadavg()[0]
        result = subprocess.run([sys.executable, __file__, "--stage-worker", json.dumps(spec)],
                                env={**os.environ, **stage_env(args)}, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise RuntimeError(f"stage {kind} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return {**json.loads(result_file.read_text()), "load": [load_before, os.getloadavg()[0]]}


def stage_worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = hf_worker(spec) if spec["kind"] == "hf" else raw_vllm_worker(spec)
    Path(spec["result"]).write_text(json.dumps(result))


PIPELINES = {  # stage -> (actors, vLLM's async engine)
    "b": (1, True), "b2": (2, True), "bs": (1, False)}


def start_ray(args: argparse.Namespace) -> None:
    """A local Ray with a CPU per thread of each actor of (b2) and one more for the image-loading tasks."""
    from reasonbed.ray_runtime import init_ray

    init_ray(num_cpus=None if os.environ.get("RAY_ADDRESS") else 2 * args.threads + 1,
             runtime_env={"env_vars": stage_env(args)})


def run_pipeline(stage: str, model_dir: str, data_root: str, output: str, args: argparse.Namespace) -> dict[str, Any]:
    """(b), (b2) or (bs): run_generation, timed from its actors' first batch task to the last row at the driver."""
    from reasonbed.config import load
    from reasonbed.generation import shards
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation

    actors, vllm_async = PIPELINES[stage]
    actor_cpus = float(args.threads)
    start_ray(args)
    engine = {"name": "vllm", "model": {"path": model_dir}, "actors": actors, "num_cpus": actor_cpus,
              "num_gpus": args.num_gpus, "batch_size": args.batch_size, "max_model_len": args.max_model_len,
              "vllm_async": vllm_async, "engine_kwargs": {"max_num_batched_tokens": args.max_num_batched_tokens}}
    if args.batches_in_flight:
        engine["batches_in_flight"] = args.batches_in_flight
    cfg = load(GenerationConfig, base={
        "data": {"dataset": "synthetic_shapes", "root": data_root}, "output": output,
        "shard_size": args.batch_size, "engine": engine,
        "sampling": {"n": args.n, "temperature": args.temperature, "top_p": 0.95, "max_tokens": args.max_tokens,
                     "seed": args.seed},
    })
    done_at: list[float] = []
    original = shards.ShardStore.write_shard

    def timed_write(self: Any, shard_name: str, table: Any) -> None:
        done_at.append(time.time())  # all rows of the shard are at the driver (wall clock, as Ray's events)
        original(self, shard_name, table)

    shards.ShardStore.write_shard = timed_write  # type: ignore[method-assign]
    load_before = os.getloadavg()[0]
    try:
        run_started = time.time()
        started = time.perf_counter()
        run_generation(cfg)
        wall = time.perf_counter() - started
    finally:
        shards.ShardStore.write_shard = original  # type: ignore[method-assign]
    table = shards.ShardStore(output).read("pass0/", columns=["completion_tokens", "seconds"])
    tokens = sum(table.column("completion_tokens").to_pylist())
    actor_class = "AsyncGenerationActor" if vllm_async else "GenerationActor"
    inits, submits = actor_task_spans(run_started, actor_class)
    window = max(done_at) - min(start for spans in submits.values() for start, _ in spans)
    busy = [union_seconds(spans) for spans in submits.values()]
    return {"tokens": tokens, "window_seconds": window, "actors": actors, "vllm_async": vllm_async,
            "actor_init_seconds": max(end - start for start, end in inits),
            "actor_busy_seconds": busy, "actor_tasks": sum(len(spans) for spans in submits.values()),
            "most_tasks_at_once": max(most_at_once(spans) for spans in submits.values()),
            "engine_seconds": sum(table.column("seconds").to_pylist()),
            "end_to_end_seconds": wall, "shards": len(done_at), "actor_cpus": actor_cpus,
            "load": [load_before, os.getloadavg()[0]]}


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the (start, end) spans."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of the (start, end) spans that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def actor_task_spans(since: float, actor_class: str, timeout_s: float = 30.0
                     ) -> tuple[list[tuple[float, float]], dict[str, list[tuple[float, float]]]]:
    """(start, end) in epoch seconds of the generation actors' __init__s, and of each actor's batch tasks.

    From Ray's task events (the state API), which Ray records for every task; they reach the GCS
    within a second or so of the task's end, so this polls until every task of the run is finished.
    """
    from ray.util.state import list_tasks

    prefix = f"MapWorker(MapBatches({actor_class}))."
    deadline = time.time() + timeout_s
    while True:
        tasks = [task for name in ("__init__", "submit")
                 for task in list_tasks(filters=[("name", "=", prefix + name)], detail=True, limit=10_000,
                                        raise_on_missing_output=False)
                 if task.start_time_ms and task.start_time_ms / 1000 >= since]
        finished = all(task.end_time_ms for task in tasks)
        inits = [task for task in tasks if task.name.endswith(".__init__")]
        submits = [task for task in tasks if task.name.endswith(".submit")]
        if (finished and inits and submits) or time.time() > deadline:
            break
        time.sleep(1.0)
    if not (finished and inits and submits):
        raise RuntimeError("Ray's task events for the generation actors are incomplete (is the state API "
                           "available? a local Ray started by reasonbed has it)")
    by_actor: dict[str, list[tuple[float, float]]] = {}
    for task in submits:
        by_actor.setdefault(str(task.actor_id), []).append((task.start_time_ms / 1000, task.end_time_ms / 1000))
    return [(task.start_time_ms / 1000, task.end_time_ms / 1000) for task in inits], by_actor


def hf_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """(c), run in its own process: the hf engine (batched transformers generate) on the same batches, cold."""
    from reasonbed.inference.base import EngineConfig
    from reasonbed.inference.hf_engine import HFEngine
    from reasonbed.models.configs import ModelConfig

    engine = HFEngine(EngineConfig(name="hf", model=ModelConfig(path=spec["model"]), batch_size=spec["batch_size"]))
    sampling = sampling_config(argparse.Namespace(**spec["sampling"]))
    batches = batches_of_requests(spec["data_root"], spec["batch_size"])
    tokens, seconds = 0, 0.0
    for batch in batches:
        started = time.perf_counter()
        results = engine.generate(batch, sampling)
        seconds += time.perf_counter() - started
        tokens += sum(c.completion_tokens for candidates in results for c in candidates)
    return {"tokens": tokens, "seconds": seconds}


def rate(part: dict[str, Any], tokens: int | None = None) -> float:
    return (part["tokens"] if tokens is None else tokens) / part["seconds"] if part["seconds"] else 0.0


def report_pipeline(number: int, stage: str, pipe: dict[str, Any]) -> float:
    """Print one pipeline stage's figures; returns its tokens/s over the timed window."""
    rate_ = pipe["tokens"] / pipe["window_seconds"]
    busy = ", ".join(f"{100 * seconds / pipe['window_seconds']:.0f}%" for seconds in pipe["actor_busy_seconds"])
    engine = "async engine" if pipe["vllm_async"] else "offline engine"
    print(f"[{number}] ({stage}) pipeline, {pipe['actors']} vLLM actor(s), {engine} ({pipe['actor_cpus']:g} CPU "
          f"each): {rate_:.1f} tok/s ({pipe['tokens']} tok / {pipe['window_seconds']:.2f} s from the first batch "
          f"task to the last row at the driver); actors busy {busy}; at most {pipe['most_tasks_at_once']} batch "
          f"task(s) in one actor at once; per engine {pipe['tokens'] / pipe['engine_seconds']:.1f} tok/s; end to "
          f"end {pipe['tokens'] / pipe['end_to_end_seconds']:.1f} tok/s ({pipe['end_to_end_seconds']:.1f} s, of "
          f"which actor start {pipe['actor_init_seconds']:.1f} s); load {pipe['load'][0]:.1f}->{pipe['load'][1]:.1f}",
          flush=True)
    return rate_


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def one_round(number: int, model_dir: str, data_root: str, workdir: Path,
              args: argparse.Namespace) -> dict[str, Any]:
    """Every stage once, one after the other; their tokens/s and ratios."""
    raw1 = run_stage("raw-one-call", model_dir, data_root, args)
    raw2 = run_stage("raw-batched", model_dir, data_root, args)
    a1, a2 = rate(raw1), rate(raw2)
    print(f"[{number}] (a) raw vLLM, fresh engine each: one call {a1:.1f} tok/s ({raw1['tokens']} tok / "
          f"{raw1['seconds']:.2f} s); batches of {args.batch_size} {a2:.1f} tok/s ({raw2['tokens']} tok / "
          f"{raw2['seconds']:.2f} s); engine init {raw1['init_s']:.1f} s; load {raw1['load'][0]:.1f}->"
          f"{raw2['load'][1]:.1f}", flush=True)
    stages = [stage for stage in PIPELINES if not (stage == "bs" and args.skip_sync)
              and not (stage == "b2" and args.skip_two_actors)]
    pipes, rates = {}, {}
    for stage in stages:
        pipes[stage] = run_pipeline(stage, model_dir, data_root, str(workdir / f"chains-{time.time_ns()}"), args)
        rates[stage] = report_pipeline(number, stage, pipes[stage])
    c = None
    if not args.skip_hf:
        hf = run_stage("hf", model_dir, data_root, args)
        c = rate(hf)
        print(f"[{number}] (c) HF generate, batches of {args.batch_size}: {c:.1f} tok/s ({hf['tokens']} tok / "
              f"{hf['seconds']:.2f} s); load {hf['load'][0]:.1f}->{hf['load'][1]:.1f}", flush=True)
    b = rates["b"]
    ratios = {"b/a1": ratio(b, a1), "b/a2": ratio(b, a2), "b/c": ratio(b, c), "b2/b": ratio(rates.get("b2"), b),
              "bs/a1": ratio(rates.get("bs"), a1), "b/bs": ratio(b, rates.get("bs"))}
    print(f"[{number}] ratios: " + "  ".join(f"{k} = {v:.2f}" for k, v in ratios.items() if v is not None),
          flush=True)
    return {"a1": a1, "a2": a2, **rates, "c": c, **ratios, "raw_one_call": raw1, "raw_batched": raw2,
            "pipelines": pipes}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage_worker:
        stage_worker(args.stage_worker)
        return 0
    workdir, data_root, model_dir = bench_workspace(args.workdir, "reasonbed-bench-gen-", args.images_per_class,
                                                    args.size)
    images = 24 * args.images_per_class
    print(f"model qwen2_vl-{args.size} ({model_dir}); {images} images x n={args.n}, max_tokens "
          f"{args.max_tokens}, temperature {args.temperature}, batch {args.batch_size}; {os.cpu_count()} cores",
          flush=True)

    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append(one_round(number, model_dir, str(data_root), workdir, args))
    import ray

    ray.shutdown()

    def median(key: str) -> float | None:
        values = sorted(r[key] for r in rounds if r.get(key) is not None)
        return statistics.median(values) if values else None

    keys = ("a1", "a2", "b", "b2", "bs", "c", "b/a1", "b/a2", "b/c", "b2/b", "bs/a1", "b/bs")
    summary = {key: median(key) for key in keys}
    print(f"== median over {len(rounds)} round(s): " + "  ".join(
        f"{key} {value:.2f}" if "/" in key else f"{key} {value:.1f} tok/s"
        for key, value in summary.items() if value is not None))
    for key, target in (("b/a1", TARGET_B_OVER_A1), ("b/c", TARGET_B_OVER_C)):
        value = summary[key]
        if value is not None:
            print(f"target {key} >= {target}: {'met' if value >= target else 'NOT met'} ({value:.2f})")
    write_bench_results(args.json, args, rounds, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
