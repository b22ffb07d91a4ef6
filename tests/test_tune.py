"""LODO sweeps: Optuna + ASHA on Ray Tune, DomainBed selection and statistics, trial seeds, protocol mode,
restore after a killed driver, s3://."""

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
from reasonbed.tune.records import TrialRecord, load_records
from reasonbed.tune.selection import Choice, errored_summary, format_avg, format_mean, results_table, select
from reasonbed.tune.spaces import SearchSpaceError, load_space

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 3, "palette": "by_class"},
    "methods": ["direct"], "num_samples": 4, "max_concurrent_trials": 1, "studies_in_parallel": 2,
    "train": {"optim.max_steps": 6, "eval.every": 2, "eval.max_per_domain": 4},
    "asha": {"grace_period": 32, "reduction_factor": 2, "max_t": 96},  # examples seen (6 steps x batch 16)
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
                               "train.eval.every=20", "train.optim.batch_size=16", "asha.grace_period=320",
                               "asha.max_t=640"))  # examples: one rung at the first of two evaluations
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


def _report(step: int, val: float, test: float, out: float | None = None, **extra) -> dict:
    row = {"step": step, "total_steps": 4, "val_acc": val, "test_acc": test, "select_on": "direct", **extra}
    if out is not None:
        row["test_out_acc"] = out
    return row


def _record(trial_id: str, reports: list, status: str = "completed", seed: int = 0, domain: str = "photo",
            method: str = "direct", **fields) -> TrialRecord:
    return TrialRecord("s", method, domain, seed, trial_id, {"optim.lr": 1e-3}, reports, status, **fields)


def test_leave_one_domain_out_selection_reads_the_held_out_runs():
    """The trial with the best mean accuracy over its held-out source domains wins, whatever its val_acc or
    test_acc; trials missing a held-out run, or stopped early, are no candidates; none at all gives X."""
    sources = ["art", "cartoon", "sketch"]

    def record(trial_id: str, val: float, test: float, heldout: dict, status: str = "completed") -> TrialRecord:
        reports = [{**_report(4, val, test), "time_total_s": 10.0}]
        return _record(trial_id, reports, status, lodo={"sources": sources, "heldout_acc": heldout, "seconds": 20.0})

    records = [record("a", 0.9, 0.9, {"art": 0.2, "cartoon": 0.3, "sketch": 0.1}),
               record("b", 0.1, 0.2, {"art": 0.6, "cartoon": 0.5, "sketch": 0.4}),
               record("c", 0.5, 0.5, {"art": 0.9, "cartoon": 0.9}),  # one held-out run missing
               record("d", 0.5, 0.5, {"art": 1.0, "cartoon": 1.0, "sketch": 1.0}, status="stopped")]
    choice = select(records, "leave_one_domain_out")[("direct", "photo", 0)]
    assert (choice.trial_id, choice.step, choice.test_acc) == ("b", 4, 0.2)
    assert choice.score == pytest.approx(0.5) and choice.val_acc == pytest.approx(0.1)
    assert records[0].seconds == pytest.approx(30.0), "the held-out runs count in the trial's cost"
    assert select(records)[("direct", "photo", 0)].trial_id == "a", "training-domain validation differs"
    bare = [_record(r.trial_id, r.reports) for r in records]
    assert select(bare, "leave_one_domain_out")[("direct", "photo", 0)] is None
    row = results_table(bare, ["photo"], "leave_one_domain_out")[0]
    assert format_mean(row.cells["photo"]) == "X" and format_avg(row) == "X"


def test_training_domain_reports_test_in_part_and_oracle_picks_on_the_out_part():
    """Training-domain validation: best val_acc over all trials and checkpoints, reporting test_acc (in part).
    Oracle: each trial's last checkpoint, chosen by test_out_acc, reporting test_acc - never by test_acc itself."""
    records = [_record("a", [_report(2, 0.2, 0.3, 0.35), _report(4, 0.6, 0.4, 0.30)]),
               _record("b", [_report(2, 0.5, 0.9, 0.99), _report(4, 0.5, 0.95, 0.50)]),  # best test_acc, worse out
               _record("c", [_report(2, 0.1, 0.1, 0.10), _report(4, 0.1, 0.2, 0.80)])]
    honest = select(records)[("direct", "photo", 0)]
    assert (honest.trial_id, honest.step, honest.test_acc, honest.select_on) == ("a", 4, 0.4, "direct")
    oracle = select(records, "oracle")[("direct", "photo", 0)]
    assert isinstance(oracle, Choice) and (oracle.trial_id, oracle.step) == ("c", 4)
    assert (oracle.score, oracle.test_acc) == (0.80, 0.2), "picked on the out part, reported on the in part"
    assert results_table(records, ["photo"])[0].cells["photo"].values == (0.4,)
    old = [_record("z", [_report(4, 0.5, 0.5)])]  # a report from before the test domain was split
    assert select(old, "oracle")[("direct", "photo", 0)] is None


def test_ties_go_to_the_later_checkpoint_then_the_later_trial():
    """Ray keeps the later of two equally scored checkpoints (and always the latest): the choice is one Ray kept."""
    records = [_record("t_00000", [_report(2, 0.7, 0.1), _report(4, 0.7, 0.2), _report(6, 0.5, 0.3)]),
               _record("t_00001", [_report(2, 0.6, 0.4)])]
    choice = select(records)[("direct", "photo", 0)]
    assert (choice.trial_id, choice.step) == ("t_00000", 4)
    tied = [_record("t_00000", [_report(4, 0.7, 0.1)]), _record("t_00001", [_report(4, 0.7, 0.2)])]
    assert select(tied)[("direct", "photo", 0)].trial_id == "t_00001"
    assert select([_record("t_00000", [_report(4, 0.7, 0.1, 0.6)]), _record("t_00001", [_report(4, 0.7, 0.2, 0.6)])],
                  "oracle")[("direct", "photo", 0)].trial_id == "t_00001"


def test_errored_trials_valid_reports_stay_candidates():
    records = [_record("a", [_report(2, 0.5, 0.5)]),
               _record("b", [_report(2, 0.9, 0.7, 0.6), {"step": 4, "val_acc": float("nan"), "test_acc": 0.1}],
                       status="errored"),
               _record("c", [], status="errored")]
    records[1].reports = records[1].reports[:1]  # what load_records keeps: the valid reports only
    chosen = select(records)
    choice = chosen[("direct", "photo", 0)]
    assert choice.trial_id == "b" and choice.errored and choice.test_acc == 0.7
    assert select(records, "oracle")[("direct", "photo", 0)].trial_id == "b"
    assert errored_summary(records, chosen) == {"errored": 2, "errored_candidates": 1, "chosen_from_errored": 1}


def test_cells_are_domainbed_mean_and_standard_error_avg_is_the_mean_of_means():
    """As collect_results.format_mean: mean ± np.std(data / sqrt(n)) in percent; one seed says n=1; Avg is the
    plain mean of the per-domain means, X when a domain has no result."""
    import numpy as np

    accs = {("photo", 0): 0.50, ("photo", 1): 0.60, ("photo", 2): 0.90, ("sketch", 0): 0.40}
    records = [_record(f"t{d}{s}", [_report(4, 0.5, acc)], seed=s, domain=d) for (d, s), acc in accs.items()]
    row = results_table(records, ["photo", "sketch"])[0]
    photo = [0.50, 0.60, 0.90]
    expected_err = 100 * np.std(np.array(photo) / np.sqrt(3))
    assert format_mean(row.cells["photo"]) == f"{100 * np.mean(photo):.1f} ± {expected_err:.1f}"
    assert format_mean(row.cells["photo"]) == "66.7 ± 9.8"  # pstdev/sqrt(n); pstdev alone would say 17.0
    assert format_mean(row.cells["photo"], latex=True) == "66.7 $\\pm$ 9.8"
    assert format_mean(row.cells["sketch"]) == "40.0 (n=1)"
    assert format_avg(row) == f"{(100 * np.mean(photo) + 40.0) / 2:.1f}" == "53.3"
    missing = results_table(records, ["photo", "sketch", "cartoon"])[0]
    assert format_mean(missing.cells["cartoon"]) == "X" and format_avg(missing) == "X"


def test_zero_shot_row_leads_every_table_without_selection():
    from reasonbed.tune.records import ZERO_SHOT_ROW

    zero = [TrialRecord("zero_shot", ZERO_SHOT_ROW, "photo", s, f"zero_shot-photo-s{s}", {},
                        [_report(0, 0.3, acc, 0.9)], "completed", cpus=2, lodo={}) for s, acc in ((0, 0.25), (1, 0.35))]
    records = [_record("a", [_report(4, 0.9, 0.8, 0.1)]), _record("b", [_report(4, 0.9, 0.6, 0.1)], seed=1)]
    for selection in ("training_domain", "oracle", "leave_one_domain_out"):
        rows = results_table(records, ["photo"], selection, zero_shot=zero)
        assert rows[0].zero_shot and rows[0].method == ZERO_SHOT_ROW and rows[0].trials == 0
        assert format_mean(rows[0].cells["photo"]) == "30.0 ± 3.5" and rows[0].select_on == "direct"
        assert [row.method for row in rows[1:]] == ["direct"]


# --- what a trial seed changes; the protocol ---------------------------------------------------------

def test_seed_hash_is_domainbeds():
    import hashlib

    from reasonbed.tune.seeds import seed_hash

    assert seed_hash(3, 1) == int(hashlib.md5(b"(3, 1)").hexdigest(), 16) % 2**31
    assert 0 <= seed_hash("split", 0, 0) < 2**31 and seed_hash("split", 0, 0) != seed_hash("split", 0, 1)


def test_two_trial_seeds_give_two_splits_two_draw_sequences_and_record_them():
    from reasonbed.data.specs import get_spec
    from reasonbed.data.splits import lodo_split
    from reasonbed.tune.optuna_search import make_searcher
    from reasonbed.tune.trial import seeds_of, trial_train_config

    sweep = load(SweepConfig, base={**BASE, "seeds": [0, 1]})
    configs = [trial_train_config({}, sweep, "direct", "photo", seed, "") for seed in (0, 1)]
    seeds = [seeds_of(sweep, seed) for seed in (0, 1)]
    assert [c.data.split_seed for c in configs] == [s.split_seed for s in seeds]
    assert [c.seed for c in configs] == [s.train_seed for s in seeds]
    assert len({s.split_seed for s in seeds}) == len({s.sampler_seed for s in seeds}) == len({s.train_seed for s in seeds}) == 2
    assert trial_train_config({}, sweep, "mtct", "sketch", 1, "").data.split_seed == seeds[1].split_seed, \
        "one split per trial seed, whatever the method and test domain (as DomainBed)"
    spec = get_spec("pacs")
    index = [{"id": f"{d}/{c}/{i}", "domain": d, "label": spec.classes.index(c), "class_name": c}
             for d in spec.domains for c in spec.classes for i in range(5)]
    splits = [lodo_split(spec, index, "photo", 0.2, c.data.split_seed) for c in configs]
    assert splits[0].val != splits[1].val, "two trial seeds, two in/out splits"
    space = load_space(REPO / "search_spaces", "direct", "synthetic_shapes")

    def draws(search: str, seed: int) -> list[dict]:
        searcher = make_searcher(search, seed, "s", optuna.storages.InMemoryStorage(), space.defaults())
        searcher.set_search_properties("val_acc", "max", space.tune_space())
        return [searcher.suggest(f"t{i}") for i in range(4)]

    for search in ("random", "tpe"):
        a, b = draws(search, seeds[0].sampler_seed), draws(search, seeds[1].sampler_seed)
        assert a[0] == pytest.approx(space.defaults()) == b[0], "draw 0 is the defaults"
        assert a[1:] != b[1:], f"{search}: two trial seeds, two draw sequences"
        assert draws(search, seeds[0].sampler_seed) == a, f"{search}: a seed reproduces its draws"


def test_protocol_mode_random_search_without_early_stopping():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from reasonbed.config import to_dict
    from reasonbed.tune.config import protocol
    from reasonbed.tune.driver import scheduler

    domainbed = load(SweepConfig, overrides=["search=random", "asha.enabled=false"], base=BASE)
    assert isinstance(scheduler(domainbed), FIFOScheduler) and not isinstance(scheduler(domainbed), ASHAScheduler)
    default = load(SweepConfig, base=BASE)
    assert default.search == "tpe" and isinstance(scheduler(default), ASHAScheduler)
    assert scheduler(default)._time_attr == "examples_seen"
    assert protocol(to_dict(domainbed)) == {"search": "random search", "num_samples": 4, "seeds": [0],
                                            "early_stopping": "none (every trial trains to its end)"}
    assert "ASHA on val_acc (grace 32 examples" in protocol(to_dict(default))["early_stopping"]
    assert "evaluations" in protocol({"asha": {"grace_period": 1, "max_t": 3}})["early_stopping"], "old sweeps"
    with pytest.raises(ConfigError, match="search"):
        load(SweepConfig, overrides=["search=grid"], base=BASE)


@pytest.mark.slow
def test_sweep_with_lodo_selection_runs_and_reports_it(tmp_path, ray_session):
    """DomainBed's protocol (random search, no early stopping): one study, two trials that both train to their
    end, each trained again with every source domain held out in turn: the records carry the held-out
    accuracies, the LODO table has a number, a held-out domain was never trained on, the tables say the protocol,
    the zero-shot row is there."""
    from reasonbed.report.build import build_report

    outcome = run_sweep(_sweep(tmp_path, "num_samples=2", "test_domains=[photo]", "lodo_selection=true",
                               "search=random", "asha.enabled=false", "train.optim.max_steps=4", "train.eval.every=2"))
    records = load_records(outcome["sweep"])
    assert len(records) == 2 and all(r.status == "completed" for r in records)
    first = min(optuna.load_study(study_name="direct-photo-s0", storage=outcome["study_storage"]).trials,
                key=lambda trial: trial.number)
    assert first.params == pytest.approx(load_space(REPO / "search_spaces", "direct", "synthetic_shapes").defaults())
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
    assert "| direct |" in table and "X" not in table.split("| direct |")[1].split("|")[1], table
    assert "Leave-one-domain-out choices" in markdown
    assert "search **random search**" in markdown and "early stopping: none (every trial trains to its end)" in markdown
    assert "| zero-shot (base model) |" in table
    from reasonbed.tune.trial import seeds_of

    sweep_cfg = _sweep(tmp_path, "num_samples=2", "test_domains=[photo]")
    assert all(record.seeds == seeds_of(sweep_cfg, 0).to_dict() for record in records), "seeds in trial.json"


@pytest.mark.slow
def test_killed_sweep_driver_restores_and_each_trial_ends_once(tmp_path, ray_session):
    storage = tmp_path / "runs"
    command = [sys.executable, str(REPO / "jobs" / "tune_pacs.py"), "--smoke-test", f"--storage={storage}",
               "--name=killed", "methods=[direct]", "test_domains=[photo]", "num_samples=3",
               "studies_in_parallel=1", "train.optim.max_steps=6", "train.eval.every=3", "asha.grace_period=48",
               "asha.max_t=96"]
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


def test_zero_shot_config_is_a_trials_config_with_a_run_of_its_own(tmp_path):
    from reasonbed.tune.trial import seeds_of, trial_train_config
    from reasonbed.tune.zero_shot import zero_shot_config

    sweep = _sweep(tmp_path, "seeds=[0, 3]", "train.method_config={rounds: 2}", "methods=[sarr]")
    trial = trial_train_config({}, sweep, "sarr", "sketch", 3, "chains")
    zero = zero_shot_config(sweep, "sketch", 3, tmp_path / "zs", str(tmp_path / "zs" / "ray"))
    assert (zero.method, zero.method_config, zero.chains) == ("zero_shot", {}, "")
    assert zero.data == trial.data and zero.data.split_seed == seeds_of(sweep, 3).split_seed
    assert zero.eval == trial.eval and zero.seed == trial.seed and zero.test_domain == "sketch"
    assert zero.name == "zero_shot-sketch-s3" and zero.run_dir == str(tmp_path / "zs")


def _zero_shot_registered() -> bool:
    import reasonbed.methods  # noqa: F401 - registers the built-in methods
    from reasonbed.methods.base import METHODS

    return "zero_shot" in METHODS


@pytest.mark.slow
@pytest.mark.skipif(not _zero_shot_registered(), reason="the zero_shot method is not registered in this checkout")
def test_zero_shot_runs_once_per_domain_and_seed_and_resumes(tmp_path, ray_session):
    from reasonbed.tune.records import load_zero_shot
    from reasonbed.tune.zero_shot import run_zero_shot

    cfg = _sweep(tmp_path, "seeds=[0, 1]")
    sweep_uri = str(tmp_path / "sweep")
    first = run_zero_shot(cfg, ["photo"], sweep_uri, tmp_path / "local")
    assert [(r["test_domain"], r["seed"]) for r in first] == [("photo", 0), ("photo", 1)]
    records = load_zero_shot(sweep_uri)
    assert len(records) == 2 and all(r.reports and r.last["step"] == 0 for r in records)
    assert records[0].seeds["split_seed"] != records[1].seeds["split_seed"]
    assert all("test_out_acc" in r.last and r.provenance.get("data_manifest_sha256") for r in records)
    stamp = (tmp_path / "sweep" / "zero_shot" / "photo-s0" / "zero_shot.json").stat().st_mtime_ns
    again = run_zero_shot(cfg, ["photo"], sweep_uri, tmp_path / "local")  # recorded: skipped, not rerun
    assert again == first
    assert (tmp_path / "sweep" / "zero_shot" / "photo-s0" / "zero_shot.json").stat().st_mtime_ns == stamp


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
        run_sweep(_sweep(tmp_path, "max_concurrent_trials=4", "studies_in_parallel=2", "zero_shot=false"))
