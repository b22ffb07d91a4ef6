"""Fine-tune an MLLM with LoRA on one leave-one-domain-out split, on Ray Train.

One machine (tiny model, synthetic benchmark, local Ray, CPU):
    python jobs/train.py --method direct --smoke-test
    python jobs/train.py --method mtct --smoke-test          # generates template chains first
Real data and model on a cluster:
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/train.py --method mtct --dataset pacs --data-root s3://bucket/PACS \
        --test-domain sketch --model OpenGVLab/InternVL3-8B-hf --family internvl3 \
        --chains s3://bucket/chains/pacs --workers 8 --gpu --run-dir /mnt/runs/mtct-sketch
Anything else is a key=value override of reasonbed.train.config.TrainConfig, e.g.
`optim.lr=1e-4 lora.r=16 method_config.reasoning_weight=0.5 eval.every=100`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

FLAGS = {
    "method": "method", "dataset": "data.dataset", "data_root": "data.root", "test_domain": "test_domain",
    "model": "model.path", "family": "model.family", "chains": "chains", "workers": "scale.num_workers",
    "run_dir": "run_dir", "epochs": "optim.epochs", "lr": "optim.lr", "batch_size": "optim.batch_size",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 4},
    "optim": {"batch_size": 8, "epochs": 1.0, "lr": 2e-3, "warmup_ratio": 0.0},
    "eval": {"every": 4, "max_per_domain": 6, "reasoning_max_tokens": 48},
    "method_config": {},
}


def main(argv: Sequence[str] | None = None) -> int:
    from reasonbed.jobcli import flag_parser, parse_job_args, resolve_config
    from reasonbed.train.config import TrainConfig
    from reasonbed.train.run import run

    parser = flag_parser(__doc__, FLAGS, gpu_help="one GPU per worker")
    args = parse_job_args(parser, argv)
    cfg = resolve_config(TrainConfig, args, FLAGS, SMOKE)
    if args.smoke_test and cfg.run_dir == TrainConfig.run_dir:
        from dataclasses import replace

        cfg = replace(cfg, run_dir=tempfile.mkdtemp(prefix=f"reasonbed-train-{cfg.method}-"))
    result = run(cfg, smoke=args.smoke_test)
    final = {key: value for key, value in result.final.items() if key in ("step", "loss", "val_acc", "test_acc")}
    print(json.dumps({"run_dir": str(result.run_dir), "adapter": str(result.adapter), **final}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # runnable from a checkout
    import reasonbed  # noqa: F401 - torchvision fix before anything imports it
    from reasonbed.jobcli import run_job

    raise SystemExit(run_job(main))
