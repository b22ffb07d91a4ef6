"""`reasonbed predict --model M [--adapter A] --data ROOT|s3://... --out preds.parquet`: batch predictions over
any folder of images on Ray Data (vLLM with the LoRA adapter by default; `--engine hf` or `openai`).

One row per image (prompt, answer, parsed class, the chain with `prompt=reasoning`); a folder in DomainBed
layout (domain/class/image) is scored too: per-domain accuracy in <out>.accuracy.json. Class names and the
prompt come from an export's reasonbed.json (reasonbed export), `--dataset NAME` or `classes=[...]`.
One machine (tiny model, synthetic benchmark, local Ray, CPU):
    reasonbed predict --smoke-test
An exported adapter on a folder of new images (a GPU machine), and a merged export:
    reasonbed predict --adapter exports/mtct-sketch --data /data/new-images --out preds.parquet --num-gpus 1
    reasonbed predict --model exports/mtct-sketch-merged --data s3://bucket/new-images --out s3://bucket/preds.parquet
Against a served model (docs/serving.md): `--engine openai engine.base_url=http://127.0.0.1:8000/v1
engine.served_model=NAME`. Anything else is a key=value override of reasonbed.share.predict.PredictConfig.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reasonbed.cli.base import Command, add_config_options, resolve_config, temporary_path

FLAGS = {
    "data": "data", "dataset": "dataset", "adapter": "adapter", "out": "output", "model": "engine.model.path",
    "family": "engine.model.family", "dtype": "engine.model.dtype", "engine": "engine.name",
    "actors": "engine.actors", "num_gpus": "engine.num_gpus", "batch_size": "engine.batch_size", "prompt": "prompt",
}
SMOKE = {"dataset": "synthetic_shapes", "engine": {"batch_size": 16, "max_model_len": 1024}}  # vllm, else hf


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser, FLAGS)


def resolve(args: argparse.Namespace) -> Any:
    from reasonbed.share.predict import PredictConfig

    smoke = {**SMOKE, "output": temporary_path("reasonbed-predict-") + "/preds.parquet"}
    return resolve_config(PredictConfig, args, FLAGS, smoke)


def execute(cfg: Any, args: argparse.Namespace) -> int:  # noqa: ARG001 - the resolved config is all it needs
    from reasonbed.share.predict import run_predict

    print(json.dumps(run_predict(cfg), default=str))
    return 0


def config_keys() -> list[Any]:
    from reasonbed.cli.confighelp import describe
    from reasonbed.share.predict import PredictConfig

    return describe(PredictConfig)


COMMAND = Command(name="predict", summary="batch predictions over a folder of images (Ray Data + engines)",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute, config_keys=config_keys)
