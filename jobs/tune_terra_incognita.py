"""Tune methods on TerraIncognita with leave-one-domain-out splits (Ray Tune + Optuna + ASHA), then report.

jobs/tune.py with the dataset set to terra_incognita (`reasonbed tune --dataset terra_incognita ...`); `--smoke-test` runs on
the embedded default (synthetic benchmark, tiny model, template chains, local Ray, CPU).

One machine:
    python jobs/tune_terra_incognita.py --smoke-test
Real data on a cluster (bf16 InternVL3-8B, LoRA r=8, 8 GPUs per trial, chains and results on S3;
chains from jobs/generate_reasoning.py):
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/tune_terra_incognita.py --data-root s3://bucket/data/TerraIncognita --chains s3://bucket/chains/terra_incognita \
        --storage s3://bucket/reasonbed/runs --methods direct,mtct,sarr --num-samples 20 --seeds 0,1,2 \
        --max-concurrent-trials 2 --gpu train.model.path=OpenGVLab/InternVL3-8B-hf \
        train.model.family=internvl3 train.model.dtype=bfloat16 train.scale.num_workers=8 allow_autoscaling=true \
        'train.scale.resources={train_node: 1}'
Rerunning the same command resumes an interrupted sweep. Other key=value overrides set
reasonbed.tune.config.SweepConfig fields (train.<TrainConfig key>=... for every trial); `--help-config`
lists every key, `--dry-run` prints the resolved config and starts nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from reasonbed.cli.tune import preset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return preset("terra_incognita", argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
