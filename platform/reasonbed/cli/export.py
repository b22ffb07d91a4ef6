"""`reasonbed export RUN_OR_SWEEP --out DIR`: the chosen adapter, or the base model with it merged (`--merge`),
in Hugging Face format (safetensors) with a model card (README.md) and reasonbed.json.

From a training run directory, the run's own choice (selected.json: best val_acc); from a sweep
folder, the model the selection method picked for one (method, test domain, trial seed):
    reasonbed export runs/train --out exports/direct-photo
    reasonbed export runs/pacs-1a2b3c4d --method mtct --test-domain sketch --seed 0 --out exports/mtct-sketch --merge
    reasonbed export s3://bucket/sweeps/pacs-1a2b3c4d --method mtct --test-domain sketch --selection oracle \
        --out exports/mtct-sketch-oracle
The export loads with transformers' `from_pretrained` (the adapter through peft) and in vLLM;
`reasonbed predict` and docs/serving.md use it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reasonbed.cli.base import Command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_OR_SWEEP", nargs="?", default="",
                        help="a training run directory or a sweep folder (local path or s3://)")
    parser.add_argument("--out", default="", help="output directory (local, new or empty)")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the base model's weights")
    parser.add_argument("--selection", default="training_domain",
                        help="sweeps: training_domain (default), oracle or leave_one_domain_out")
    parser.add_argument("--method", default="", help="sweeps: the method (default: the only one)")
    parser.add_argument("--test-domain", default="", help="sweeps: the test domain (default: the only one)")
    parser.add_argument("--seed", type=int, default=-1, help="sweeps: the trial seed (default: the only one)")


def resolve(args: argparse.Namespace) -> Any:
    from reasonbed.config import from_dict
    from reasonbed.share.export import ExportConfig

    return from_dict(ExportConfig, {"source": args.source, "out": args.out, "merge": args.merge,
                                    "selection": args.selection, "method": args.method,
                                    "test_domain": args.test_domain, "seed": args.seed})


def execute(cfg: Any, args: argparse.Namespace) -> int:  # noqa: ARG001 - the resolved config is all it needs
    from reasonbed.share.export import INFO_FILE, export

    out = export(cfg)
    info = json.loads((out / INFO_FILE).read_text())
    print(json.dumps({"export": str(out), "merged": info["merged"], "base_model": info["base_model"],
                      "selection": info["selection"], "metrics": info["metrics"]}))
    return 0


COMMAND = Command(name="export", summary="export the chosen adapter or merged model with a model card",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute)
