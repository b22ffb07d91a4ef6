"""`reasonbed evaluate`: out-of-distribution evaluation of MLLMs - zero-shot, in-context learning under shift,
domain knowledge in the prompt and the linear-probe diagnosis, several models side by side (docs/evaluation.md).

One machine (tiny model, synthetic benchmark, local Ray, CPU, vLLM):
    reasonbed evaluate --smoke-test --output runs/ood-smoke
A base model against fine-tuned adapters (adapter dirs or training run dirs), on PACS (see
jobs/evaluate_ood.py for the cluster command):
    reasonbed evaluate --dataset pacs --data-root /data/PACS --model OpenGVLab/InternVL3-8B-hf --dtype bfloat16 \
        --family internvl3 --adapter runs/mtct-sketch --num-gpus 1 --output runs/ood-pacs
Anything else is a key=value override of reasonbed.evaluation.config.EvalConfig, e.g. `shots=[0,2,4,8]
conditions=[target,label_shift] prompts=[direct] queries_per_domain=100 probe.enabled=false`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from reasonbed.cli.base import Command, add_config_options, comma_list, resolve_config, temporary_path

FLAGS = {
    "dataset": "data.dataset", "data_root": "data.root", "output": "output", "engine": "engine.name",
    "actors": "engine.actors", "num_gpus": "engine.num_gpus", "batch_size": "engine.batch_size",
    "queries": "queries_per_domain", "seed": "seed",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 6},
    "engine": {"batch_size": 16, "max_model_len": 2048},  # vllm (hf where vLLM is not installed)
    # the pretrained tiny model's chains run about 80-90 tokens (docs/training.md, "The tiny world")
    "shots": [0, 2], "queries_per_domain": 12, "max_tokens_direct": 8, "max_tokens_reasoning": 128,
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser, FLAGS)
    parser.add_argument("--model", default=None, help="base model: hub id or local dir (sets models)")
    parser.add_argument("--family", default=None, help="model family of --model (default: detected from its config.json)")
    parser.add_argument("--dtype", default=None, help="weights dtype of --model (e.g. bfloat16 on GPUs)")
    parser.add_argument("--adapter", action="append", default=[],
                        help="LoRA adapter dir or training run dir, compared with the base model (repeatable)")
    parser.add_argument("--shots", default=None, help="comma-separated k values, e.g. 0,2,4,8 (sets shots)")


def _model_overrides(args: argparse.Namespace) -> list[str]:
    """--model/--family/--adapter as one `models=[...]` override: the base model, then one entry per adapter."""
    if not (args.model or args.family or args.adapter or args.dtype):
        return []
    base = {"model": {"path": args.model or "", "family": args.family or "",
                      **({"dtype": args.dtype} if args.dtype else {})}}
    entries = [base, *({**base, "adapter": adapter} for adapter in args.adapter or [])]
    return [f"models={json.dumps(entries)}"]


def resolve(args: argparse.Namespace) -> Any:
    from reasonbed.cli.checks import check_model, data_spec
    from reasonbed.evaluation.config import EvalConfig
    from reasonbed.inference.base import engine_weights

    first = [f"shots={json.dumps(comma_list(args.shots, int))}"] if args.shots else []
    args.overrides = [*_model_overrides(args), *args.overrides]
    cfg = resolve_config(EvalConfig, args, FLAGS, SMOKE, first)
    if args.smoke_test and not cfg.output:
        cfg = replace(cfg, output=temporary_path("reasonbed-ood-"))
    data_spec(cfg.data)  # an unknown dataset fails here
    if engine_weights(cfg.engine.name) == "local":  # a real dataset needs real models (the tiny one: offline data)
        for index, entry in enumerate(cfg.models):
            check_model(cfg.data, entry.model, f"models[{index}].model")
    return cfg


def execute(cfg: Any, args: argparse.Namespace) -> int:  # noqa: ARG001 - the resolved config is all it needs
    from reasonbed.evaluation.runner import run_evaluation

    report = run_evaluation(cfg)
    print(json.dumps({"report": report, "html": report.rsplit("/", 1)[0] + "/report.html"}))
    return 0


def config_keys() -> list[Any]:
    from reasonbed.cli.confighelp import describe
    from reasonbed.evaluation.config import EvalConfig

    return describe(EvalConfig)


COMMAND = Command(name="evaluate", summary="out-of-distribution evaluation: zero-shot, in-context, probe",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute, config_keys=config_keys)
