"""RL fine-tuning (GRPO) of an MLLM's LoRA adapter with domain-knowledge rewards, on Ray Train.

Rollouts come from a vLLM actor that loads the current adapter every step (or transformers with
`--engine hf`); rewards and their weights are method_config.rewards / method_config.reward_weights.

One machine (tiny model, synthetic benchmark, local Ray, CPU; a short SFT warm start first):
    python jobs/train.py --method direct --smoke-test optim.lr=5e-3 optim.batch_size=16 \
        optim.max_steps=10 data.palette=by_class run_dir=/tmp/sft
    python jobs/rl_finetune.py --smoke-test --init-adapter /tmp/sft/adapter --steps 12 eval.every=6
    python jobs/rl_finetune.py --smoke-test --engine hf          # without vLLM
Real data and model on a cluster, from an SFT adapter of jobs/train.py:
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/rl_finetune.py --dataset pacs --data-root s3://bucket/PACS --test-domain sketch \
        --model OpenGVLab/InternVL3-8B-hf --family internvl3 --init-adapter /mnt/runs/mtct-sketch/adapter \
        --workers 8 --gpu --group-size 8 --run-dir /mnt/runs/grpo-sketch \
        method_config.rollout_gpus=1 'method_config.rollout_resources={generation_node: 1}'
Anything else is a key=value override of reasonbed.train.config.TrainConfig (method_config.* are the
fields of reasonbed.methods.grpo.GRPOConfig), e.g.
`method_config.rewards=[format,accuracy,hierarchy,consistency] method_config.reward_weights=[0.2,1,0.5,0.3]`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

FLAGS = {
    "dataset": "data.dataset", "data_root": "data.root", "test_domain": "test_domain", "model": "model.path",
    "family": "model.family", "init_adapter": "init_adapter", "workers": "scale.num_workers", "run_dir": "run_dir",
    "steps": "optim.max_steps", "lr": "optim.lr", "batch_size": "optim.batch_size",
    "group_size": "method_config.group_size", "engine": "method_config.engine", "prompt": "method_config.prompt",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 4, "palette": "by_class"},
    "test_domain": "photo",
    "optim": {"batch_size": 4, "max_steps": 4, "lr": 1e-3, "warmup_ratio": 0.0, "schedule": "constant"},
    "eval": {"every": 2, "max_per_domain": 4},
    "method_config": {"group_size": 4, "prompt": "direct", "max_tokens": 8, "rewards": ["format", "accuracy", "hierarchy"],
                      "reward_weights": [0.5, 1.0, 0.5]},
}


def main(argv: Sequence[str] | None = None) -> int:
    from dataclasses import replace

    from reasonbed.jobcli import flag_parser, parse_job_args, resolve_config
    from reasonbed.train.config import TrainConfig
    from reasonbed.train.run import run

    parser = flag_parser(__doc__, FLAGS, gpu_help="one GPU per training worker")
    args = parse_job_args(parser, argv)
    args.overrides.insert(0, "method=grpo")
    cfg = resolve_config(TrainConfig, args, FLAGS, SMOKE)
    if cfg.method != "grpo":
        parser.error(f"this job runs method grpo, not {cfg.method!r} (use jobs/train.py)")
    if args.smoke_test and cfg.run_dir == TrainConfig.run_dir:
        cfg = replace(cfg, run_dir=tempfile.mkdtemp(prefix="reasonbed-grpo-"))
    result = run(cfg)
    keep = ("step", "reward/total", "kl", "clip_fraction", "val_acc", "test_acc")
    print(json.dumps({"run_dir": str(result.run_dir), "adapter": str(result.adapter),
                      **{key: value for key, value in result.final.items() if key in keep}}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # runnable from a checkout
    import reasonbed  # noqa: F401 - torchvision fix before anything imports it
    from reasonbed.jobcli import run_job

    raise SystemExit(run_job(main))
