"""Experiment tracking: MLflow and Weights & Biases behind one small API (the only module that imports them).

`TrackingConfig` is the `tracking` section of the train, sweep and generation configs
(`tracking.mlflow=URI`, `tracking.wandb=PROJECT`; both off by default). What is logged:

- a finished job (a training run, a generation run, a sweep's report) through `log_run`: its config as
  params (flattened, secrets redacted: reasonbed.redaction), a series of metric rows by step, and files
  as artifacts - one MLflow run and/or one W&B run;
- a sweep's trials live, through Ray Tune's own logger callbacks (`tune_callbacks`:
  `MLflowLoggerCallback`, `WandbLoggerCallback`), one run per trial.

No key is ever logged: params are redacted, W&B reads its key itself (`WANDB_API_KEY` or `wandb
login`), MLflow its credentials from its environment variables. `WANDB_MODE=offline` writes W&B runs
to local files only (`wandb sync` uploads them later). MLflow 3 refuses its file store (`file:` URIs,
plain paths) unless `MLFLOW_ALLOW_FILE_STORE=true`; naming one in `tracking.mlflow` is taken as that
opt-in (`sqlite:///mlflow.db` is MLflow's recommended local store).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonbed.config import flatten
from reasonbed.redaction import plain, redact

log = logging.getLogger(__name__)
MAX_PARAM_CHARS = 500  # longer param values are cut (MLflow allows 6000; a flattened config rarely needs 100)


@dataclass
class TrackingConfig:
    """Experiment tracking: MLflow and/or Weights & Biases (both off when empty)."""

    mlflow: str = ""  # MLflow tracking URI (sqlite:///mlflow.db, file:./mlruns, http://host:5000); empty = off
    wandb: str = ""  # W&B project to log to (WANDB_MODE=offline: local files only); empty = off
    experiment: str = ""  # MLflow experiment and W&B group (default: the job's name, e.g. the sweep's)
    wandb_entity: str = ""  # W&B entity (team or user; empty = the logged-in user's default)

    @property
    def enabled(self) -> bool:
        return bool(self.mlflow or self.wandb)


# Keys of a TrackingConfig under a job's config (`tracking.<field>`): where results are logged changes
# nothing a run computes, so they never block resuming a run nor change its name.
TRACKING_KEYS = tuple(f"tracking.{name}" for name in ("mlflow", "wandb", "experiment", "wandb_entity"))


def params_of(config: Any) -> dict[str, str]:
    """A config (dataclass or mapping) as flat `key: text` params, secrets redacted, long values cut."""
    flat = flatten(redact(plain(config)))
    params = {}
    for key, value in flat.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        params[key] = text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."
    return params


def metric_values(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row (bools as 0/1; strings, NaN and the step itself left out)."""
    found = {}
    for key, value in row.items():
        if key == "step" or not isinstance(value, (int, float)):
            continue
        number = float(value)
        if number == number and abs(number) != float("inf"):
            found[_metric_key(key)] = number
    return found


def _metric_key(key: str) -> str:
    """MLflow allows letters, digits, _ - . / and spaces in metric names; anything else becomes _."""
    return re.sub(r"[^\w\-./ ]", "_", key)


def _mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if "://" not in uri or uri.startswith("file:"):  # the file store: named on purpose, so opted in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def _mlflow_experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _log_mlflow(cfg: TrackingConfig, experiment: str, name: str, params: Mapping[str, str],
                series: Sequence[Mapping[str, Any]], artifacts: Sequence[Path], tags: Mapping[str, str]) -> str:
    from mlflow.entities import Metric, Param, RunTag

    client = _mlflow_client(cfg.mlflow)
    run = client.create_run(_mlflow_experiment(client, experiment), run_name=name, tags=dict(tags))
    run_id = run.info.run_id
    try:
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            client.log_batch(run_id, params=items[start:start + 100])
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, int(row.get("step", 0))) for row in series
                   for key, value in metric_values(row).items()]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        client.log_batch(run_id, tags=[RunTag("reasonbed.logged_by", "reasonbed.tracking")])
        client.set_terminated(run_id)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    return run_id


def _log_wandb(cfg: TrackingConfig, experiment: str, name: str, params: Mapping[str, str],
               series: Sequence[Mapping[str, Any]], artifacts: Sequence[Path], kind: str, directory: Path) -> str:
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=cfg.wandb, entity=cfg.wandb_entity or None, group=experiment, name=name,
                     job_type=kind, config=dict(params), dir=str(directory), reinit="create_new")
    try:
        for step in sorted({int(row.get("step", 0)) for row in series}):
            merged: dict[str, float] = {}
            for row in series:
                if int(row.get("step", 0)) == step:
                    merged.update(metric_values(row))
            if merged:
                run.log(merged, step=step)
        if artifacts:
            artifact = wandb.Artifact(re.sub(r"[^\w\-.]", "_", f"{name}-{kind}")[:128], type=kind)
            for path in artifacts:
                artifact.add_file(str(path))
            run.log_artifact(artifact)
        return str(run.dir)
    finally:
        run.finish()


def log_run(cfg: TrackingConfig, name: str, config: Any, series: Sequence[Mapping[str, Any]] = (),
            artifacts: Iterable[str | Path] = (), kind: str = "train", directory: str | Path = ".",
            default_experiment: str = "reasonbed") -> dict[str, str]:
    """Log one finished job to every enabled backend; returns {backend: run id or local run folder}.

    `config` becomes params (redacted), each row of `series` metrics at its `step`, `artifacts` files;
    W&B writes its local files under `directory`/wandb.
    """
    if not cfg.enabled:
        return {}
    experiment = cfg.experiment or default_experiment
    params = params_of(config)
    files = [Path(path) for path in artifacts if Path(path).is_file()]
    logged = {}
    if cfg.mlflow:
        logged["mlflow"] = _log_mlflow(cfg, experiment, name, params, series, files, {"reasonbed.kind": kind})
        log.info("tracking: %s logged to MLflow (experiment %s, run %s)", name, experiment, logged["mlflow"])
    if cfg.wandb:
        logged["wandb"] = _log_wandb(cfg, experiment, name, params, series, files, kind, Path(directory))
        log.info("tracking: %s logged to W&B project %s (%s)", name, cfg.wandb, logged["wandb"])
    return logged


def tune_callbacks(cfg: TrackingConfig, default_experiment: str) -> list[Any]:
    """Ray Tune's logger callbacks for the enabled backends: one MLflow / W&B run per trial, live."""
    callbacks: list[Any] = []
    experiment = cfg.experiment or default_experiment
    if cfg.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        _mlflow_experiment(_mlflow_client(cfg.mlflow), experiment)  # created once, before trials race for it
        callbacks.append(MLflowLoggerCallback(tracking_uri=cfg.mlflow, experiment_name=experiment,
                                              tags={"reasonbed.kind": "trial"}, save_artifact=False))
    if cfg.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        extra = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
        callbacks.append(WandbLoggerCallback(project=cfg.wandb, group=experiment, entity=cfg.wandb_entity or None,
                                             job_type="trial", **extra))
    return callbacks
