"""The zero-shot row of a sweep: the base model, untrained, once per (test domain, trial seed).

Every paper on DG with MLLMs reports it beside the trained rows. The driver evaluates it with
`run(replace(trial_config, method="zero_shot", ...))`: the trials' data, in/out split (the trial
seed's split_seed), prompts, parser and evaluation settings, no hyperparameters and 0 training steps
(`cfg.init_adapter` is kept, so a sweep started from an adapter compares against that adapter).
Each result lands in `<sweep>/zero_shot/<test domain>-s<seed>/zero_shot.json` (the evaluation
report, seeds, resources, wall seconds, provenance); one already there is skipped, so a rerun of the sweep
resumes. `reasonbed.tune.records.load_zero_shot` reads them back; no selection is involved.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed import storage
from reasonbed.tune.config import SweepConfig
from reasonbed.tune.trial import run_provenance, seeds_of, trial_train_config

log = logging.getLogger(__name__)

METHOD = "zero_shot"  # the registered method that trains 0 steps and reports one evaluation
RECORD = "zero_shot.json"


def zero_shot_name(test_domain: str, seed: int) -> str:
    """The folder of one zero-shot evaluation under <sweep>/zero_shot/."""
    return f"{test_domain.replace(' ', '_')}-s{seed}"


def method_prompts(method: str, options: Mapping[str, Any]) -> set[str]:
    """The prompts a method with `options` (its method_config) scores on: class facts, no method built."""
    from reasonbed.methods.base import method_class

    cls = method_class(method)
    return {cls.eval_prompt, cls.scored_prompt(cls.parse_options(options))}


def zero_shot_config(cfg: SweepConfig, test_domain: str, seed: int, run_dir: Path, train_storage: str) -> Any:
    """The TrainConfig of one zero-shot evaluation: a trial's, with method zero_shot and a run of its own."""
    trials = {method: trial_train_config({}, cfg, method, test_domain, seed, "") for method in cfg.methods}
    base = trials[cfg.methods[0]]
    # every prompt a swept method's numbers may come from (with the sweep's options), so each method row has its
    # base-model row
    prompts = {base.eval.select_on} | {prompt for method, trial in trials.items()
                                       for prompt in method_prompts(method, trial.method_config)}
    evaluation = replace(base.eval, reasoning=base.eval.reasoning or "reasoning" in prompts)
    return replace(base, method=METHOD, method_config={}, chains="", run_dir=str(run_dir), eval=evaluation,
                   name=f"{METHOD}-{zero_shot_name(test_domain, seed)}", storage_path=train_storage)


def _clear(uri: str) -> None:
    """Remove what an interrupted evaluation left (its Ray Train storage would be restored, not rerun)."""
    fs, path = storage.filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def run_zero_shot(cfg: SweepConfig, domains: list[str], sweep_uri: str, local: Path,
                  check: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Evaluate the base model per (test domain, trial seed) unless already recorded; returns every record.

    `check()` runs before each evaluation (the sweep's stop check: it raises once the sweep is stopped)."""
    from reasonbed.data import catalog
    from reasonbed.train.run import run

    records = []
    for domain in domains:
        for seed in cfg.seeds:
            name = zero_shot_name(domain, seed)
            uri = storage.join(sweep_uri, "zero_shot", name, RECORD)
            fs, path = storage.filesystem(uri)
            if check is not None:
                check()
            if fs.exists(path):
                log.info("zero-shot %s is recorded: skipped", name)
                with fs.open(path, "r") as handle:
                    records.append(json.load(handle))
                continue
            run_dir = local / "zero_shot" / name / "run"
            train_storage = (storage.join(sweep_uri, "train", f"{METHOD}-{name}") if storage.is_remote(sweep_uri)
                             else str(run_dir / "ray"))
            if run_dir.exists():
                shutil.rmtree(run_dir)
            if storage.is_remote(train_storage):
                _clear(train_storage)
            train_cfg = zero_shot_config(cfg, domain, seed, run_dir, train_storage)
            spec, root = catalog.resolve(train_cfg.data)
            started = time.perf_counter()
            result = run(train_cfg)
            if not result.metrics:
                raise RuntimeError(f"zero-shot {name}: the run reported no evaluation")
            record = {
                "method": METHOD, "test_domain": domain, "seed": seed, "seeds": seeds_of(cfg, seed).to_dict(),
                "reports": list(result.metrics), "cpus": train_cfg.scale.num_workers * train_cfg.scale.cpus_per_worker,
                "gpus": train_cfg.scale.num_workers if train_cfg.scale.use_gpu else 0,
                "seconds": time.perf_counter() - started,  # wall time of the run (model load + evaluation)
                "provenance": run_provenance(train_cfg, spec, root),
            }
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(path, "w") as handle:
                handle.write(json.dumps(record, indent=2, default=str))
            log.info("zero-shot %s: test_acc %s", name, result.metrics[-1].get("test_acc"))
            records.append(record)
    return records
