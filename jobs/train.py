"""Fine-tune an MLLM with LoRA on one leave-one-domain-out split, on Ray Train (`reasonbed train`).

One machine (tiny model, synthetic benchmark, local Ray, CPU):
    python jobs/train.py --method direct --smoke-test
    python jobs/train.py --method mtct --smoke-test          # generates template chains first
Real data and model on a cluster (bf16, 8 GPUs, chains and checkpoints on S3): Qwen2.5-VL-7B from
configs/, or InternVL3-8B named by flags:
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/train.py --config configs/train_qwen2_5_vl_7b.yaml --data-root s3://bucket/PACS \
        --chains s3://bucket/chains/pacs --storage s3://bucket/reasonbed/train --run-dir runs/mtct-sketch \
        'scale.resources={train_node: 1}'
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/train.py --method mtct --dataset pacs --data-root s3://bucket/PACS --test-domain sketch \
        --model OpenGVLab/InternVL3-8B-hf --family internvl3 --dtype bfloat16 --chains s3://bucket/chains/pacs \
        --workers 8 --gpu --run-dir runs/mtct-sketch --storage s3://bucket/reasonbed/train 'scale.resources={train_node: 1}'
Anything else is a key=value override of reasonbed.train.config.TrainConfig, e.g.
`optim.lr=1e-4 lora.r=16 method_config.reasoning_weight=0.5 eval.every=100`; `--help-config` lists
every key, `--dry-run` prints the resolved config and starts nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from reasonbed.cli import job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job("train", argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
