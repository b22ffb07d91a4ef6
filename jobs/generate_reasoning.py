"""Generate DomainBed-Reasoning chains: a teacher MLLM writes five-stage chains for every image (`reasonbed generate`).

One machine (tiny model, synthetic benchmark, local Ray, CPU; template and vLLM teachers):
    python jobs/generate_reasoning.py --smoke-test
Real data and model on a cluster (Qwen2.5-VL-7B in bf16, 8 one-GPU vLLM actors, chains on S3):
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/generate_reasoning.py --config configs/generate_pacs_qwen2_5_vl_7b.yaml \
        --data-root s3://bucket/PACS --output s3://bucket/chains/pacs 'engine.resources={generation_node: 1}'
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/generate_reasoning.py --dataset pacs --data-root s3://bucket/PACS \
        --model Qwen/Qwen2.5-VL-7B-Instruct --family qwen2_5_vl --dtype bfloat16 --engine vllm \
        --actors 8 --num-gpus 1 --candidates 4 --output s3://bucket/chains/pacs 'engine.resources={generation_node: 1}'
Anything else is a key=value override of reasonbed.generation.config.GenerationConfig, e.g.
`sampling.temperature=0.7 second_pass=rationalize engine.engine_kwargs.gpu_memory_utilization=0.85`;
`--help-config` lists every key, `--dry-run` prints the resolved config and starts nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from reasonbed.cli import job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job("generate", argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
