"""LODO sweeps: Optuna + ASHA on Ray Tune, honest selection, restore after a killed driver, s3://."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from reasonbed.config import ConfigError, load
from reasonbed.data import synthetic
from reasonbed.registry import RegistryError
from reasonbed.tune.config import SweepConfig
from reasonbed.tune.driver import run_sweep
from reasonbed.tune.records import load_records
from reasonbed.tune.selection import Choice, results_table, select
from reasonbed.tune.spaces import SearchSpaceError, load_space

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 3, "palette": "by_class"},
    "methods": ["direct"], "num_samples": 4, "max_concurrent_trials": 1, "studies_in_parallel": 2,
    "train": {"optim.max_steps": 6, "eval.every": 2, "eval.max_per_domain": 4},
    "asha": {"grace_period": 1, "reduction_factor": 2, "max_t": 3},
    "search_spaces": str(REPO / "search_spaces"),
}


def _sweep(tmp_path: Path, *overrides: str, **base) -> SweepConfig:
    return load(SweepConfig, overrides=[f"storage={tmp_path / 'runs'}", *overrides], base={**BASE, **base})


SWEEP_SPACE = """\
description: a space where some draws cannot learn within the budget (lr 1e-7), so ASHA has to stop them
params:
  optim.lr: {choice: [1.0e-7, 5.0e-3], default: 5.0e-3}
  lora.dropout: {uniform: [0.0, 0.1], default: 0.05}
"""


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory, ray_session):
    """4 test domains x 4 samples of `direct`, ASHA on val_acc, report built from the records."""
    from reasonbed.report.build import build_report

    root = tmp_path_factory.mktemp("sweep")
    spaces = root / "spaces"
    spaces.mkdir()
    (spaces / "default.yaml").write_text(SWEEP_SPACE)
    (spaces / "direct.yaml").write_text("params: {}\n")
    outcome = run_sweep(_sweep(root, f"search_spaces={spaces}", "train.optim.max_steps=40",
                               "train.eval.every=20", "train.optim.batch_size=16", "asha.max_t=2"))
    report = build_report(outcome["sweep"], root / "report")
    return outcome, report, spaces


@pytest.mark.slow
def test_small_sweep_stops_some_trials_and_reports_every_domain(small_sweep):
    outcome, report, _ = small_sweep
    records = load_records(outcome["sweep"])
    assert len(records) == 16 and {r.test_domain for r in records} == set(synthetic.STYLES)
    statuses = [r.status for r in records]
    assert "errored" not in statuses and "stopped" in statuses and "completed" in statuses, statuses
    states = {}
    for study in optuna.get_all_study_summaries(outcome["study_storage"]):
        loaded = optuna.load_study(study_name=study.study_name, storage=outcome["study_storage"])
        for trial in loaded.trials:
            states[trial.state.name] = states.get(trial.state.name, 0) + 1
            if trial.state == optuna.trial.TrialState.PRUNED:
                assert trial.user_attrs["stopped_by"] == "asha" and trial.intermediate_values
    assert states.get("COMPLETE", 0) >= 4 and states.get("PRUNED", 0) >= 1, states
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 16
    stopped = sum(1 for r in records if r.status == "stopped")
    assert stopped == states["PRUNED"]  # every early stop is told apart in the study
    markdown = (report.parent / "report.md").read_text()
    for domain in synthetic.STYLES:
        assert domain in markdown
    assert "ORACLE" in markdown and (report.parent / "trials.csv").read_text().count("\n") == 17
    for record in records:  # every number traces to its run
        assert record.provenance["data_manifest_sha256"] and record.provenance["config"]["method"] == "direct"


@pytest.mark.slow
def test_defaults_trial_first(small_sweep):
    outcome, _, spaces = small_sweep
    space = load_space(spaces, "direct", "synthetic_shapes")
    study = optuna.load_study(study_name="direct-photo-s0", storage=outcome["study_storage"])
    first = min(study.trials, key=lambda trial: trial.number)
    assert first.params == pytest.approx(space.defaults())  # DomainBed: the first draw is the defaults


def _records_from_runs(results: list) -> list:
    from reasonbed.tune.records import TrialRecord

    return [TrialRecord(study="s", method="direct", test_domain="photo", seed=0, trial_id=f"t{i}", hparams={},
                        reports=result.metrics, status="completed") for i, result in enumerate(results)]


@pytest.mark.slow
def test_flipping_test_domain_labels_changes_no_selection(tmp_path, ray_session):
    """Train the same two configurations on data whose test-domain labels are flipped: training-domain
    validation chooses the same trial and checkpoint; only the test accuracies move."""
    from reasonbed.train.config import TrainConfig
    from reasonbed.train.driver import run_training

    original = tmp_path / "original"
    synthetic.generate(str(original), images_per_class=4, palette="by_class")
    flipped = tmp_path / "flipped"
    shutil.copytree(original, flipped)
    shapes = list(synthetic.SHAPES)
    for index, shape in enumerate(shapes):  # photo/<shape> -> photo/<next shape>: every test label wrong
        (flipped / "photo" / shape).rename(flipped / "photo" / f"tmp-{shapes[(index + 1) % len(shapes)]}")
    for shape in shapes:
        (flipped / "photo" / f"tmp-{shape}").rename(flipped / "photo" / shape)
    choices, tests = [], []
    for root in (original, flipped):
        results = [run_training(load(TrainConfig, overrides=[
            f"data.root={root}", "test_domain=photo", f"run_dir={tmp_path / root.name / str(lr)}", f"optim.lr={lr}",
            "optim.max_steps=60", "eval.every=20", "eval.max_per_domain=0", "optim.batch_size=16"]))
            for lr in (2e-3, 8e-3)]
        records = _records_from_runs(results)
        choice = select(records)[("direct", "photo", 0)]
        choices.append((choice.trial_id, choice.step, choice.val_acc))
        tests.append([row["test_acc"] for result in results for row in result.metrics])
    assert choices[0] == choices[1]
    assert tests[0] != tests[1], "the flip must change what the test domain measures"


def test_leave_one_domain_out_selection_reads_the_held_out_runs():
    """The trial with the best mean accuracy over its held-out source domains wins, whatever its val_acc or
    test_acc; trials missing a held-out run, or stopped early, are no candidates; none at all gives n/a."""
    from reasonbed.tune.records import TrialRecord
    from reasonbed.tune.selection import format_cell

    sources = ["art", "cartoon", "sketch"]

    def record(trial_id: str, val: float, test: float, heldout: dict, status: str = "completed") -> TrialRecord:
        reports = [{"step": 4, "total_steps": 4, "val_acc": val, "test_acc": test, "time_total_s": 10.0}]
        return TrialRecord("s", "direct", "photo", 0, trial_id, {"optim.lr": 1e-3}, reports, status,
                           lodo={"sources": sources, "heldout_acc": heldout, "seconds": 20.0})

    records = [record("a", 0.9, 0.9, {"art": 0.2, "cartoon": 0.3, "sketch": 0.1}),
               record("b", 0.1, 0.2, {"art": 0.6, "cartoon": 0.5, "sketch": 0.4}),
               record("c", 0.5, 0.5, {"art": 0.9, "cartoon": 0.9}),  # one held-out run missing
               record("d", 0.5, 0.5, {"art": 1.0, "cartoon": 1.0, "sketch": 1.0}, status="stopped")]
    choice = select(records, "leave_one_domain_out")[("direct", "photo", 0)]
    assert (choice.trial_id, choice.step, choice.test_acc) == ("b", 4, 0.2)
    assert choice.val_acc == pytest.approx(0.5)
    assert records[0].seconds == pytest.approx(30.0), "the held-out runs count in the trial's cost"
    assert select(records)[("direct", "photo", 0)].trial_id == "a", "training-domain validation differs"
    bare = [TrialRecord("s", "direct", "photo", 0, r.trial_id, {}, r.reports, "completed") for r in records]
    assert select(bare, "leave_one_domain_out")[("direct", "photo", 0)] is None
    assert format_cell(results_table(bare, ["photo"], "leave_one_domain_out")[0]["photo"]) == "n/a"


def test_selection_ignores_test_metrics_but_oracle_does_not():
    from reasonbed.tune.records import TrialRecord

    def record(trial_id: str, vals: list[float], tests: list[float]) -> TrialRecord:
        reports = [{"step": 2 * (i + 1), "total_steps": 2 * len(vals), "val_acc": v, "test_acc": t}
                   for i, (v, t) in enumerate(zip(vals, tests, strict=True))]
        return TrialRecord("s", "direct", "photo", 0, trial_id, {}, reports, "completed")

    records = [record("a", [0.2, 0.6], [0.3, 0.4]), record("b", [0.5, 0.5], [0.9, 0.95])]
    honest = select(records)[("direct", "photo", 0)]
    assert (honest.trial_id, honest.step, honest.test_acc) == ("a", 4, 0.4)
    oracle = select(records, "oracle")[("direct", "photo", 0)]
    assert oracle.trial_id == "b" and isinstance(oracle, Choice)
    table = results_table(records, ["photo"])
    assert table[0]["photo"][0] == pytest.approx(0.4)


@pytest.mark.slow
def test_sweep_with_lodo_selection_runs_and_reports_it(tmp_path, ray_session):
    """One study, two trials, each trained again with every source domain held out in turn: the records
    carry the held-out accuracies, the LODO table has a number, and a held-out domain was never trained on."""
    from reasonbed.report.build import build_report

    outcome = run_sweep(_sweep(tmp_path, "num_samples=2", "test_domains=[photo]", "lodo_selection=true",
                               "train.optim.max_steps=4", "train.eval.every=2", "asha.max_t=2"))  # 2 reports: max_t
    records = load_records(outcome["sweep"])
    assert len(records) == 2 and all(r.status == "completed" for r in records)
    for record in records:
        assert sorted(record.lodo["heldout_acc"]) == sorted(set(synthetic.STYLES) - {"photo"})
        assert record.lodo_score is not None and 0.0 <= record.lodo_score <= 1.0
    choice = select(records, "leave_one_domain_out")[("direct", "photo", 0)]
    assert choice is not None and choice.val_acc == max(r.lodo_score for r in records)
    run_dir = Path(records[0].path) / "lodo" / "sketch"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "acc/direct/sketch/heldout" in metrics[-1] and "acc/direct/sketch/in" not in metrics[-1]
    assert "heldout_acc" in metrics[-1] and "acc/direct/photo/test" in metrics[-1]
    report = build_report(outcome["sweep"], tmp_path / "report")
    markdown = (report.parent / "report.md").read_text()
    table = markdown.split("### Leave-one-domain-out selection")[1].split("\n\n")[1]
    assert "| direct |" in table and "n/a" not in table.split("| direct |")[1].split("|")[1], table
    assert "Leave-one-domain-out choices" in markdown


@pytest.mark.slow
def test_killed_sweep_driver_restores_and_each_trial_ends_once(tmp_path, ray_session):
    storage = tmp_path / "runs"
    command = [sys.executable, str(REPO / "jobs" / "tune_pacs.py"), "--smoke-test", f"--storage={storage}",
               "--name=killed", "methods=[direct]", "test_domains=[photo]", "num_samples=3",
               "studies_in_parallel=1", "train.optim.max_steps=6", "train.eval.every=3", "asha.max_t=2"]
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study = storage / "killed" / "direct-photo-s0"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        finished = [p for p in study.glob("trial_*/result.json") if '"step": 6' in p.read_text()]
        if finished and list(study.glob("experiment_state-*.json")):
            break
        time.sleep(0.5)
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (study / "done").exists()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    records = load_records(str(storage / "killed"))
    assert len(records) == 3 and len({r.trial_id for r in records}) == 3
    assert all(r.status in ("completed", "stopped") for r in records)
    storage_url = json.loads((storage / "killed" / "sweep.json").read_text())["study_storage"]
    trials = optuna.load_study(study_name="direct-photo-s0", storage=storage_url).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3 and not [t for t in trials if t.state.name == "RUNNING"]
    assert len({t.user_attrs["tune_trial_id"] for t in finished}) == 3


@pytest.mark.slow
def test_sweep_on_s3_and_restore(tmp_path, s3_bucket, ray_session):
    import s3fs

    cfg = _sweep(tmp_path, f"storage=s3://{s3_bucket}/sweeps", "name=s3sweep", "test_domains=[photo]",
                 "num_samples=2", "studies_in_parallel=1")
    outcome = run_sweep(cfg, local_root=str(tmp_path / "local"))
    fs = s3fs.S3FileSystem()
    assert fs.exists(f"{s3_bucket}/sweeps/s3sweep/direct-photo-s0/done")
    first = load_records(outcome["sweep"])
    assert len(first) == 2 and all(r.reports for r in first)
    fs.rm(f"{s3_bucket}/sweeps/s3sweep/direct-photo-s0/done")  # as if the driver died before the end
    fs.rm(f"{s3_bucket}/sweeps/s3sweep/done")
    run_sweep(cfg, local_root=str(tmp_path / "local"))  # Tuner.restore from s3://: nothing is rerun
    again = load_records(outcome["sweep"])
    assert sorted(r.trial_id for r in again) == sorted(r.trial_id for r in first)
    assert fs.exists(f"{s3_bucket}/sweeps/s3sweep/optuna.db")


# --- bad input --------------------------------------------------------------------------------------

def test_malformed_search_space_names_file_key_problem(tmp_path):
    (tmp_path / "direct.yaml").write_text("params:\n  optim.lr: {loguniform: [0, 1.0e-3]}\n")
    with pytest.raises(SearchSpaceError, match=r"direct.yaml: params.optim.lr: loguniform needs low < high"):
        load_space(tmp_path, "direct", "pacs")
    (tmp_path / "direct.yaml").write_text("params:\n  optim.learning_rate: {choice: [1, 2]}\n")
    with pytest.raises(SearchSpaceError, match=r"params.optim.learning_rate: .*unknown config key"):
        load_space(tmp_path, "direct", "pacs")
    (tmp_path / "direct.yaml").write_text("params:\n  lora.r: {gaussian: [1, 2]}\n")
    with pytest.raises(SearchSpaceError, match="unknown entry 'gaussian'"):
        load_space(tmp_path, "direct", "pacs")


def test_unknown_method_in_sweep(tmp_path):
    with pytest.raises(RegistryError, match="unknown method 'dpo'"):
        run_sweep(_sweep(tmp_path, "methods=[direct, dpo]"))


def test_test_domain_missing_from_data(tmp_path):
    with pytest.raises(ValueError, match="no domain 'clipart'"):
        run_sweep(_sweep(tmp_path, "test_domains=[clipart]"))


def test_more_concurrent_trials_than_resources(tmp_path, ray_session):
    with pytest.raises(ConfigError, match="max_concurrent_trials 4 .* 8 CPU, but the cluster has 2 CPU"):
        run_sweep(_sweep(tmp_path, "max_concurrent_trials=4", "studies_in_parallel=2"))
