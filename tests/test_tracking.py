"""Experiment tracking (reasonbed.tracking): a training run and a sweep's trials logged to a local MLflow file
store and to W&B in offline mode; params redacted; no key in anything written; a rerun logs nothing twice."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from reasonbed.config import load
from reasonbed.tracking import params_of
from reasonbed.train.config import TrainConfig

KEY = "rb-wandb-key-" + uuid.uuid4().hex  # a fake W&B key in the environment: it must appear nowhere
SMALL = {"data": {"dataset": "synthetic_shapes", "images_per_class": 2}, "test_domain": "photo",
         "optim": {"batch_size": 4, "max_steps": 4, "lr": 3e-3, "warmup_ratio": 0.5},
         "eval": {"every": 2, "max_per_domain": 2}, "scale": {"backend": "local"}}


def _files_hold(root: Path, text: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


def test_params_are_flat_redacted_and_cut():
    params = params_of({"study_storage": "postgresql://bob:hunter2@db/optuna", "optim": {"lr": 5e-4},
                        "data": {"storage_options": {"secret": "s3cr3t", "region": "x"}}, "api_key": "k3y",
                        "api_key_env": "MY_KEY", "long": "x" * 2000, "seeds": [0, 1]})
    assert params["optim.lr"] == "0.0005" and params["seeds"] == "[0, 1]" and params["api_key_env"] == "MY_KEY"
    assert params["study_storage"] == "postgresql://bob:***@db/optuna"
    assert params["data.storage_options.secret"] == "***" and params["data.storage_options.region"] == "x"
    assert params["api_key"] == "***" and len(params["long"]) == 500
    assert "hunter2" not in json.dumps(params) and "s3cr3t" not in json.dumps(params)


def test_tracking_keys_change_neither_the_run_name_nor_block_resume(tmp_path):
    from reasonbed.config import config_differences, to_dict
    from reasonbed.train.config import RESUMABLE_KEYS

    plain = load(TrainConfig, base=SMALL)
    tracked = load(TrainConfig, overrides=["tracking.mlflow=sqlite:///x.db", "tracking.wandb=p"], base=SMALL)
    assert plain.run_name == tracked.run_name
    assert config_differences(to_dict(plain), tracked, RESUMABLE_KEYS) == []


@pytest.mark.slow
def test_training_run_logged_to_mlflow_file_store_and_wandb_offline(tmp_path, tiny_model_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from reasonbed.train.run import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    store = tmp_path / "mlruns"
    cfg = load(TrainConfig, overrides=[f"run_dir={tmp_path / 'run'}", f"tracking.mlflow=file:{store}",
                                       "tracking.wandb=reasonbed-test", "tracking.experiment=tracked"], base=SMALL)
    result = run(cfg)
    logged = json.loads((result.run_dir / "tracking.json").read_text())

    client = MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name("tracked")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == logged["mlflow"] and found.info.status == "FINISHED"
    assert found.info.run_name == cfg.run_name
    assert found.data.params["optim.lr"] == "0.003" and found.data.params["method"] == "direct"
    losses = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]  # every step's loss, not the evaluation window means
    lrs = sorted(client.get_metric_history(found.info.run_id, "lr"), key=lambda m: m.step)
    assert [m.step for m in lrs] == [1, 2, 3, 4] and lrs[0].value < lrs[1].value  # the warmup is visible
    steps = [json.loads(line) for line in (result.run_dir / "steps.jsonl").read_text().splitlines()]
    assert [m.value for m in sorted(losses, key=lambda m: m.step)] == pytest.approx([row["loss"] for row in steps])
    val = client.get_metric_history(found.info.run_id, "val_acc")
    assert sorted(m.step for m in val) == [2, 4]
    assert sorted(m.value for m in val) == sorted(row["val_acc"] for row in result.metrics)
    assert any(key.startswith("acc/direct/photo/") for key in found.data.metrics)
    artifacts = {item.path for item in client.list_artifacts(found.info.run_id)}
    assert {"metrics.jsonl", "steps.jsonl", "selected.json", "config.yaml", "provenance.json"} <= artifacts

    wandb_dir = result.run_dir / "wandb"
    assert list(wandb_dir.glob("offline-run-*/run-*.wandb")), sorted(wandb_dir.rglob("*"))[:20]
    assert logged["wandb"].startswith(str(wandb_dir))
    assert not _files_hold(store, KEY) and not _files_hold(wandb_dir, KEY)

    again = run(cfg)  # the finished run is returned, and not logged a second time
    assert again.run_dir == result.run_dir
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert len(list(wandb_dir.glob("offline-run-*"))) == 1


@pytest.mark.slow
def test_sweep_trials_logged_live_by_tunes_callbacks(tmp_path, ray_session, monkeypatch):
    from mlflow.tracking import MlflowClient

    from reasonbed.tune.config import SweepConfig
    from reasonbed.tune.driver import run_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    store = tmp_path / "mlruns"
    cfg = load(SweepConfig, overrides=[
        f"storage={tmp_path / 'runs'}", f"tracking.mlflow=file:{store}", "tracking.wandb=reasonbed-test",
        "name=tracked-sweep"], base={
        "data": {"dataset": "synthetic_shapes", "images_per_class": 2}, "methods": ["direct"],
        "test_domains": ["photo"], "num_samples": 1, "zero_shot": False, "studies_in_parallel": 1,
        "train": {"optim.max_steps": 2, "optim.batch_size": 4, "eval.every": 2, "eval.max_per_domain": 2,
                  "scale.backend": "local"},
        "asha": {"enabled": False}})
    outcome = run_sweep(cfg)

    client = MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name("tracked-sweep")
    (trial,) = client.search_runs([experiment.experiment_id])
    assert trial.info.status == "FINISHED" and "optim.lr" in trial.data.params
    assert 0.0 <= trial.data.metrics["val_acc"] <= 1.0 and "test_acc" in trial.data.metrics
    sweep = Path(outcome["sweep"])
    assert list(sweep.rglob("offline-run-*/run-*.wandb")), "no W&B offline run under the sweep folder"


def test_evaluate_job_logs_its_accuracies_and_report_to_mlflow(tmp_path):
    """The OOD evaluation's tracking: accuracy per (model, prompt, condition, k) and the report as artifacts."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from reasonbed.evaluation.config import EvalConfig
    from reasonbed.evaluation.runner import _track

    store = tmp_path / "mlruns"
    cfg = load(EvalConfig, overrides=[f"output={tmp_path / 'out'}", f"tracking.mlflow=file:{store}"])
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.md", "report.html", "config.yaml"):
        (out / name).write_text(name)
    predictions = pd.DataFrame({"model": ["base"] * 3, "prompt": ["direct"] * 3, "condition": ["zero_shot"] * 3,
                                "k": [0, 0, 0], "correct": [True, False, True]})
    _track(cfg, "synthetic_shapes", predictions, out, {"seed": 0}, out)
    client = MlflowClient(tracking_uri=f"file:{store}")
    (found,) = client.search_runs([client.get_experiment_by_name("synthetic_shapes-ood").experiment_id])
    assert found.info.run_name == "evaluate-synthetic_shapes"
    assert found.data.metrics["acc/base/direct/zero_shot/k0"] == pytest.approx(2 / 3)
    assert {a.path for a in client.list_artifacts(found.info.run_id)} >= {"report.md", "report.html"}
