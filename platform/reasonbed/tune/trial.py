"""One Tune trial: a driver function that builds its own Ray Train run (the Ray Train V2 pattern).

The trial turns its sampled hyperparameters into TrainConfig overrides on top of the sweep's fixed
values, writes `trial.json` (what it is) and `provenance.json` (config, code and package versions,
data manifest hash) into its trial directory first, then trains with a TuneReportCallback so every
`ray.train.report` reaches Tune (ASHA) and the Optuna study.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed import storage
from reasonbed.config import format_override, load, to_dict

RESERVED = {"_note"}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1} (dotted keys stay as they are)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("method_config", "storage_options", "engine_kwargs"):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def trial_train_config(config: dict[str, Any], sweep: Any, method: str, test_domain: str, seed: int,
                       chains: str) -> Any:
    """The TrainConfig of a trial: sweep data + fixed values + sampled hyperparameters."""
    from reasonbed.train.config import TrainConfig

    base = {"method": method, "test_domain": test_domain, "seed": seed, "chains": chains,
            "data": to_dict(sweep.data), "ray_address": sweep.ray_address}
    overrides = [format_override(key, value) for key, value in flatten(sweep.train).items()]
    overrides += [format_override(key, value) for key, value in config.items() if key not in RESERVED]
    return load(TrainConfig, overrides=overrides, base=base)


def run_trial(config: dict[str, Any], sweep: Any, method: str, test_domain: str, seed: int, chains: str,
              study: str, sweep_uri: str) -> None:
    """Tune function trainable (bound with tune.with_parameters)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    import reasonbed  # noqa: F401 - torchvision fix in the trial process
    from reasonbed.data import catalog
    from reasonbed.data.reader import scan
    from reasonbed.provenance import provenance
    from reasonbed.train.run import run

    context = tune.get_context()
    trial_dir = Path(context.get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = trial_train_config(config, sweep, method, test_domain, seed, chains)
    train_storage = (storage.join(sweep_uri, "train", context.get_trial_id()) if storage.is_remote(sweep_uri)
                     else str(trial_dir / "run" / "ray"))
    cfg = replace(cfg, run_dir=str(trial_dir / "run"), name=context.get_trial_id(), storage_path=train_storage)
    spec, root = catalog.resolve(cfg.data)
    (trial_dir / "trial.json").write_text(json.dumps({
        "study": study, "method": method, "test_domain": test_domain, "seed": seed,
        "trial_id": context.get_trial_id(), "hparams": {k: v for k, v in config.items() if k not in RESERVED},
        "cpus": cfg.scale.num_workers * cfg.scale.cpus_per_worker,
        "gpus": cfg.scale.num_workers if cfg.scale.use_gpu else 0, "chains": chains,
    }, indent=2, default=str))
    (trial_dir / "provenance.json").write_text(json.dumps(provenance(cfg, scan(spec, root)), indent=2, default=str))
    run(cfg, callbacks=(TuneReportCallback(),))
