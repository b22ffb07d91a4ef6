"""Generate DomainBed-Reasoning chains: a teacher MLLM writes five-stage chains for every image.

One machine (tiny model, synthetic benchmark, local Ray, CPU; template and vLLM teachers):
    python jobs/generate_reasoning.py --smoke-test
Real data and model on a cluster:
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/generate_reasoning.py --dataset pacs --data-root s3://bucket/PACS \
        --model OpenGVLab/InternVL3-8B-hf --family internvl3 --engine vllm --actors 8 --num-gpus 1 \
        --candidates 4 --output s3://bucket/chains/pacs
Anything else is a key=value override of reasonbed.generation.config.GenerationConfig, e.g.
`sampling.temperature=0.7 second_pass=rationalize engine.engine_kwargs.gpu_memory_utilization=0.85`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

FLAGS = {
    "dataset": "data.dataset", "data_root": "data.root", "output": "output", "engine": "engine.name",
    "model": "engine.model.path", "family": "engine.model.family", "actors": "engine.actors",
    "num_gpus": "engine.num_gpus", "candidates": "sampling.n", "shard_size": "shard_size",
    "second_pass": "second_pass", "batch_size": "engine.batch_size",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 3},
    "engine": {"name": "vllm", "batch_size": 8, "max_model_len": 1024},
    "sampling": {"n": 2, "max_tokens": 48},
    "shard_size": 12,
}


def main(argv: Sequence[str] | None = None) -> int:
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation
    from reasonbed.generation.summary import format_summary
    from reasonbed.jobcli import flag_parser, resolve_config

    args = flag_parser(__doc__, FLAGS).parse_args(argv)
    cfg = resolve_config(GenerationConfig, args, FLAGS, SMOKE)
    if args.smoke_test:
        output = Path(cfg.output or tempfile.mkdtemp(prefix="reasonbed-chains-"))
        runs = [("template", replace(cfg, engine=replace(cfg.engine, name="template", template_noise=0.2),
                                     output=str(output / "template"), second_pass="more")),
                ("vllm", replace(cfg, output=str(output / "vllm")))]
    else:
        runs = [(cfg.engine.name, cfg)]
    for name, run_cfg in runs:
        summary = run_generation(run_cfg)
        print(f"== {name} teacher -> {run_cfg.output}\n{format_summary(summary)}")
        if summary["candidates"] == 0:
            print(json.dumps(summary), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # runnable from a checkout
    import reasonbed  # noqa: F401 - torchvision fix before anything imports it
    from reasonbed.jobcli import run_job

    raise SystemExit(run_job(main))
