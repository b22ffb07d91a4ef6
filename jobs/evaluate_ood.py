"""Evaluate MLLMs out of distribution: zero-shot, in-context learning under shift, domain knowledge
and the linear-probe diagnosis, for a base model and its fine-tuned adapters side by side.

One machine (tiny model, synthetic benchmark, local Ray, CPU):
    python jobs/evaluate_ood.py --smoke-test --output runs/ood-smoke
PACS on a real model, base against a trained adapter, on a cluster:
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/evaluate_ood.py --dataset pacs --data-root /data/PACS \
        --model OpenGVLab/InternVL3-8B-hf --family internvl3 --dtype bfloat16 --adapter /mnt/runs/mtct-sketch \
        --actors 4 --num-gpus 1 --output s3://bucket/reasonbed/ood-pacs engine.max_model_len=8192 \
        'engine.resources={generation_node: 1}'
`--dry-run` prints the resolved config and starts nothing; `--help-config` lists every key (docs/evaluation.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from reasonbed.cli import job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job("evaluate", argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
