"""The shared body of jobs/tune_<dataset>.py: flags, the smoke preset, the sweep, then the report.

`--smoke-test` runs the whole chain on the embedded default: the synthetic benchmark, the tiny
model, template-teacher chains, tuning of `direct` and `mtct` over every LODO split with ASHA, and
the report (Markdown + HTML) - the README's main job.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLAGS = {
    "data_root": "data.root", "storage": "storage", "num_samples": "num_samples", "name": "name",
    "max_concurrent_trials": "max_concurrent_trials", "chains": "chains", "study_storage": "study_storage",
    "studies_in_parallel": "studies_in_parallel",
}
# Each jobs/tune_<dataset>.py preset's --help ends with these commands, filled in for its dataset.
USAGE = """\
One machine (embedded default: synthetic benchmark, tiny model, template chains, local Ray, CPU):
    python jobs/tune_{dataset}.py --smoke-test
Real data on a cluster (chains from jobs/generate_reasoning.py; storage on object storage):
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \\
        python jobs/tune_{dataset}.py --data-root s3://bucket/data/{folder} --chains s3://bucket/chains/{dataset} \\
        --storage s3://bucket/reasonbed/runs --methods direct,mtct,sarr --num-samples 20 --seeds 0,1,2 \\
        --max-concurrent-trials 4 train.model.path=OpenGVLab/InternVL3-8B-hf train.model.family=internvl3 \\
        train.scale.use_gpu=true train.scale.num_workers=8 allow_autoscaling=true
Rerunning the same command resumes an interrupted sweep. Other key=value overrides set
reasonbed.tune.config.SweepConfig fields (train.<TrainConfig key>=... for every trial).
"""
DATASET_FOLDERS = {"pacs": "PACS", "vlcs": "VLCS", "office_home": "OfficeHome", "terra_incognita": "TerraIncognita"}


def usage(dataset: str, doc: str | None) -> str:
    """The preset's docstring followed by the commands for its dataset."""
    commands = USAGE.format(dataset=dataset, folder=DATASET_FOLDERS.get(dataset, dataset))
    return f"{(doc or '').strip()}\n\n{commands}"


SMOKE: dict[str, Any] = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 4, "palette": "by_class"},
    "methods": ["direct", "mtct"],
    "num_samples": 2,
    "max_concurrent_trials": 1,
    "studies_in_parallel": 2,
    "generate_chains": True,
    "generation": {"engine": {"name": "template", "template_noise": 0.1}, "sampling": {"n": 2}},
    "train": {"optim.max_steps": 16, "eval.every": 8, "eval.max_per_domain": 4},
    "asha": {"grace_period": 64, "reduction_factor": 2, "max_t": 256},  # examples seen: 16 steps x batch <= 16
}


def main(dataset: str, doc: str | None, argv: Sequence[str] | None = None) -> int:
    from reasonbed.jobcli import flag_parser, resolve_config
    from reasonbed.report.build import build_report
    from reasonbed.tune.config import SweepConfig
    from reasonbed.tune.driver import run_sweep

    parser = flag_parser(usage(dataset, doc), FLAGS)
    parser.add_argument("--methods", default=None, help="comma-separated methods, e.g. direct,mtct,sarr")
    parser.add_argument("--seeds", default=None, help="comma-separated trial seeds, e.g. 0,1,2")
    parser.add_argument("--test-domains", default=None, help="comma-separated test domains (default: all)")
    parser.add_argument("--lodo-selection", action="store_true",
                        help="also train every finished trial with each source domain held out in turn, for "
                             "leave-one-domain-out selection (sets lodo_selection=true)")
    args = parser.parse_args(argv)
    if args.lodo_selection:
        args.overrides.append("lodo_selection=true")
    for flag, key in (("methods", "methods"), ("seeds", "seeds"), ("test_domains", "test_domains")):
        value = getattr(args, flag)
        if value:
            items = [item.strip() for item in value.split(",") if item.strip()]
            args.overrides.append(f"{key}={json.dumps([int(i) for i in items] if flag == 'seeds' else items)}")
    smoke = dict(SMOKE)
    if not args.smoke_test:
        args.overrides.insert(0, f"data.dataset={dataset}")
    elif not args.storage:
        smoke["storage"] = tempfile.mkdtemp(prefix="reasonbed-sweep-")
    cfg = resolve_config(SweepConfig, args, FLAGS, smoke)
    outcome = run_sweep(cfg)
    report = build_report(outcome["sweep"], Path(outcome["local"]) / "report")
    print(json.dumps({"sweep": outcome["sweep"], "report": str(report), "studies": outcome["studies"]},
                     indent=2, default=str))
    return 0


def entry(dataset: str, doc: str | None) -> None:
    from reasonbed.jobcli import run_job

    sys.exit(run_job(lambda argv: main(dataset, doc, argv)))
