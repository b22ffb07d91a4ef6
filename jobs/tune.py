"""Tune methods on a dataset with leave-one-domain-out splits (Ray Tune + Optuna + ASHA), then report (`reasonbed tune`).

jobs/tune_pacs.py, tune_vlcs.py, tune_office_home.py and tune_terra_incognita.py are this job with
the dataset set. `--smoke-test` runs the whole chain on the embedded default (synthetic benchmark,
tiny model, template chains, local Ray, CPU).

One machine:
    python jobs/tune.py --smoke-test
    python jobs/tune.py --dataset folder --data-root /data/MyDomains --methods direct --gpu \
        train.model.path=Qwen/Qwen2.5-VL-7B-Instruct train.model.family=qwen2_5_vl train.model.dtype=bfloat16
Real data on a cluster (bf16 InternVL3-8B, 8 GPUs per trial, chains generated first, results on S3):
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/tune.py --dataset terra_incognita --data-root s3://bucket/data/TerraIncognita \
        --storage s3://bucket/reasonbed/runs --methods direct,mtct --seeds 0,1,2 --gpu generate_chains=true \
        generation.engine.model.path=Qwen/Qwen2.5-VL-7B-Instruct generation.engine.model.family=qwen2_5_vl \
        generation.engine.model.dtype=bfloat16 generation.engine.num_gpus=1 generation.engine.actors=4 \
        train.model.path=OpenGVLab/InternVL3-8B-hf train.model.family=internvl3 train.model.dtype=bfloat16 \
        train.scale.num_workers=8 allow_autoscaling=true 'train.scale.resources={train_node: 1}' \
        'generation.engine.resources={generation_node: 1}'
Rerunning the same command resumes an interrupted sweep. Other key=value overrides set
reasonbed.tune.config.SweepConfig fields (train.<TrainConfig key>=... for every trial); `--help-config`
lists every key, `--dry-run` prints the resolved config and starts nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from reasonbed.cli import job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job("tune", argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
