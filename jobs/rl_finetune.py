"""RL fine-tuning (GRPO) of an MLLM's LoRA adapter with domain-knowledge rewards, on Ray Train (`reasonbed rl`).

Rollouts come from a vLLM actor that loads the current adapter every step (or transformers with
`--engine hf`); rewards and their weights are method_config.rewards / method_config.reward_weights.

One machine (tiny model, synthetic benchmark, local Ray, CPU; a short SFT warm start first):
    python jobs/train.py --method direct --smoke-test optim.lr=5e-3 optim.batch_size=16 \
        optim.max_steps=10 data.palette=by_class run_dir=/tmp/sft
    python jobs/rl_finetune.py --smoke-test --init-adapter /tmp/sft/adapter --steps 12 eval.every=6
    python jobs/rl_finetune.py --smoke-test --engine hf          # without vLLM
Real data and model on a cluster, from an SFT adapter of jobs/train.py (bf16, 8 training GPUs, one
rollout GPU on the generation group, checkpoints on S3):
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/rl_finetune.py --dataset pacs --data-root s3://bucket/PACS --test-domain sketch \
        --model OpenGVLab/InternVL3-8B-hf --family internvl3 --dtype bfloat16 \
        --init-adapter runs/mtct-sketch/adapter --workers 8 --gpu --group-size 8 \
        --run-dir runs/grpo-sketch --storage s3://bucket/reasonbed/train \
        method_config.rollout_gpus=1 'method_config.rollout_resources={generation_node: 1}' \
        'scale.resources={train_node: 1}'
Anything else is a key=value override of reasonbed.train.config.TrainConfig (method_config.* are the
fields of reasonbed.methods.grpo.GRPOConfig), e.g.
`method_config.rewards=[format,accuracy,hierarchy,consistency] method_config.reward_weights=[0.2,1,0.5,0.3]`;
`--help-config` lists every key, `--dry-run` prints the resolved config and starts nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from reasonbed.cli import job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job("rl", argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
