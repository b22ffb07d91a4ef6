"""Tune methods on OfficeHome with leave-one-domain-out splits (Ray Tune + Optuna + ASHA), then report.

One machine (embedded default: synthetic benchmark, tiny model, template chains, local Ray, CPU):
    python jobs/tune_office_home.py --smoke-test
Real data on a cluster (chains from jobs/generate_reasoning.py; storage on object storage):
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/tune_office_home.py --data-root s3://bucket/data/OfficeHome --chains s3://bucket/chains/office_home \
        --storage s3://bucket/reasonbed/runs --methods direct,mtct,sarr --num-samples 20 --seeds 0,1,2 \
        --max-concurrent-trials 4 train.model.path=OpenGVLab/InternVL3-8B-hf train.model.family=internvl3 \
        train.scale.use_gpu=true train.scale.num_workers=8 allow_autoscaling=true
Rerunning the same command resumes an interrupted sweep. Other key=value overrides set
reasonbed.tune.config.SweepConfig fields (train.<TrainConfig key>=... for every trial).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # runnable from a checkout
    import reasonbed  # noqa: F401 - torchvision fix before anything imports it
    from reasonbed.tune.job import entry

    entry("office_home", __doc__)
