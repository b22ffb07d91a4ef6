"""LODO sweeps: Optuna + ASHA on Ray Tune, DomainBed selection and statistics, trial seeds, protocol mode.
(Restore after a killed driver and a sweep on s3://: tests/test_sweep_control.py, one scenario; ASHA's early
stops, the defaults drawn first and the report of a whole sweep: its parallel-studies SIGINT scenario.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from reasonbed.config import ConfigError, load
from reasonbed.data import synthetic
from reasonbed.registry import RegistryError
from reasonbed.tune.config import SweepConfig
from reasonbed.tune.driver import run_sweep
from reasonbed.tune.records import TrialRecord, load_records
from reasonbed.tune.selection import select
from reasonbed.tune.spaces import SearchSpaceError, load_space

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 3, "palette": "by_class"},
    "methods": ["direct"], "num_samples": 4, "max_concurrent_trials": 1, "studies_in_parallel": 2,
    # trials train in their own process (scale.backend=local: the same worker loop, no Ray Train worker group,
    # half a trial's time); Ray Train inside a sweep: the S3 scenario of tests/test_sweep_control.py
    "train": {"optim.max_steps": 6, "eval.every": 2, "eval.max_per_domain": 4, "scale.backend": "local"},
    "asha": {"grace_period": 32, "reduction_factor": 2, "max_t": 96},  # examples seen (6 steps x batch 16)
    "search_spaces": str(REPO / "search_spaces"),
}


def _sweep(tmp_path: Path, *overrides: str, **base) -> SweepConfig:
    return load(SweepConfig, overrides=[f"storage={tmp_path / 'runs'}", *overrides], base={**BASE, **base})


def _records_from_runs(results: list) -> list:

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
            "optim.max_steps=24", "eval.every=8", "eval.max_per_domain=0", "optim.batch_size=16",
            "scale.backend=local"]))  # in process: selection is the point here, not Ray Train
            for lr in (2e-3, 8e-3)]
        records = _records_from_runs(results)
        choice = select(records)[("direct", "photo", 0)]
        choices.append((choice.trial_id, choice.step, choice.val_acc))
        tests.append([row["test_acc"] for result in results for row in result.metrics])
    assert choices[0] == choices[1]
    assert tests[0] != tests[1], "the flip must change what the test domain measures"


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
        configs = [searcher.suggest(f"t{i}") for i in range(4)]
        assert [config.pop("_draw") for config in configs] == [0, 1, 2, 3], "each config says its draw number"
        return configs

    for search in ("random", "tpe"):
        a, b = draws(search, seeds[0].sampler_seed), draws(search, seeds[1].sampler_seed)
        assert a[0] == pytest.approx(space.defaults()) == b[0], "draw 0 is the defaults"
        assert a[1:] != b[1:], f"{search}: two trial seeds, two draw sequences"
        assert draws(search, seeds[0].sampler_seed) == a, f"{search}: a seed reproduces its draws"


def test_a_restored_study_does_not_draw_the_defaults_again_unless_they_were_abandoned():
    """Ray sets a restored searcher's study up again, enqueueing points_to_evaluate into the persistent study:
    the defaults must not come back as a second draw - unless their trial was abandoned (closed FAIL)."""
    from reasonbed.tune.optuna_search import make_searcher

    space = load_space(REPO / "search_spaces", "direct", "synthetic_shapes")
    storage = optuna.storages.InMemoryStorage()

    def searcher():
        made = make_searcher("random", 0, "s", storage, space.defaults())
        made.set_search_properties("val_acc", "max", space.tune_space())
        return made

    first = searcher().suggest("t0")
    assert {k: v for k, v in first.items() if k != "_draw"} == pytest.approx(space.defaults())
    restored = searcher().suggest("t1")  # the first trial still runs (interrupted, to be resumed)
    assert restored["_draw"] == 1 and {k: v for k, v in restored.items() if k != "_draw"} != pytest.approx(
        space.defaults()), "a restored study drew the defaults twice"
    study = optuna.load_study(study_name="s", storage=storage)
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # what close_abandoned does
    again = searcher().suggest("t2")
    assert {k: v for k, v in again.items() if k != "_draw"} == pytest.approx(space.defaults()), \
        "abandoned defaults are drawn again"


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
    the zero-shot row is there. Its trials train in their own process, so they start no queue actor for Ray
    Train's reports (one each, polled every 0.2 s, before 2026-12-04)."""
    from ray.util.state import list_actors

    from reasonbed.report.build import build_report

    def report_queues() -> int:  # Ray Train -> Tune report queues ever started on the session's Ray (dead ones too)
        return len(list_actors(filters=[("class_name", "=", "_QueueActor")], limit=10_000, raise_on_missing_output=False))

    queues = report_queues()
    outcome = run_sweep(_sweep(tmp_path, "num_samples=2", "test_domains=[photo]", "lodo_selection=true",
                               "search=random", "asha.enabled=false", "train.optim.max_steps=4", "train.eval.every=2"))
    assert report_queues() == queues, "a trial training in its own process started a queue for Ray Train's reports"
    records = load_records(outcome["sweep"])
    assert len(records) == 2 and all(r.status == "completed" for r in records)
    first = min(optuna.load_study(study_name="direct-photo-s0", storage=outcome["study_storage"]).trials,
                key=lambda trial: trial.number)
    assert first.params == pytest.approx(load_space(REPO / "search_spaces", "direct", "synthetic_shapes").defaults())
    for record in records:
        assert sorted(record.lodo["heldout_acc"]) == sorted(set(synthetic.STYLES) - {"photo"})
        assert record.lodo_score is not None and 0.0 <= record.lodo_score <= 1.0
    choice = select(records, "leave_one_domain_out")[("direct", "photo", 0)]
    assert choice is not None and choice.score == max(r.lodo_score for r in records)
    run_dir = Path(records[0].path) / "lodo" / "sketch"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "acc/direct/sketch/heldout" in metrics[-1] and "acc/direct/sketch/in" not in metrics[-1]
    assert "heldout_acc" in metrics[-1] and "acc/direct/photo/in" in metrics[-1] and "acc/direct/photo/out" in metrics[-1]
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


@pytest.mark.slow
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

def test_the_main_jobs_cells_each_come_from_at_least_48_test_images(tmp_path):
    """`make run`'s sweep (`--smoke-test`): each test domain's in part, which its table cells score, holds at least 48
    images (a cell's standard error is small), and no evaluation cap cuts it, for every method and test domain."""
    import copy

    from reasonbed.cli.tune import SMOKE
    from reasonbed.data import catalog
    from reasonbed.data.reader import scan
    from reasonbed.data.splits import lodo_split
    from reasonbed.tune.trial import trial_train_config

    sweep = load(SweepConfig, base={**copy.deepcopy(SMOKE), "storage": str(tmp_path / "sweep")})
    spec, root = catalog.resolve(sweep.data)
    index = scan(spec, root)
    domains = sweep.test_domains or list(spec.domains)
    assert len(domains) == 4 and set(sweep.methods) == {"direct", "mtct"}
    for method in sweep.methods:
        for domain in domains:
            cfg = trial_train_config({}, sweep, method, domain, 0, "")
            split = lodo_split(spec, index, domain, cfg.data.holdout_fraction, cfg.data.split_seed)
            cap = cfg.eval.max_per_domain  # 0: every image
            assert len(split.test_in) >= 48 and (cap == 0 or cap >= 48), (method, domain, len(split.test_in), cap)


def test_importances_are_ped_anova_shares_and_none_when_no_parameter_tells_the_best_trials_apart(tmp_path):
    from reasonbed.tune.optuna_search import param_importances

    url = f"sqlite:///{tmp_path / 'study.db'}"
    sampler = optuna.samplers.RandomSampler(seed=0)
    ranked = optuna.create_study(study_name="ranked", storage=url, direction="maximize", sampler=sampler)
    ranked.optimize(lambda t: t.suggest_float("lr", 0.0, 1.0) + 0.0 * t.suggest_float("dropout", 0.0, 1.0),
                    n_trials=20)
    tied = optuna.create_study(study_name="tied", storage=url, direction="maximize", sampler=sampler)
    tied.optimize(lambda t: 0.5 + 0.0 * t.suggest_float("lr", 0.0, 1.0) * t.suggest_float("dropout", 0.0, 1.0),
                  n_trials=6)
    values = param_importances(url, "ranked")
    assert set(values) == {"lr", "dropout"} and sum(values.values()) == pytest.approx(1.0)
    assert values["lr"] > 0.8, values  # the objective is lr
    assert values == dict(optuna.importance.get_param_importances(ranked))  # Optuna's default evaluator
    assert param_importances(url, "tied") == {}  # all raw importances 0: not shown as equal shares


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


def test_object_storage_with_in_process_trials_is_refused_before_the_sweep_starts(tmp_path):
    with pytest.raises(ConfigError, match=r"storage_path 's3://bucket/sweeps/train': scale.backend=local keeps "
                       r"checkpoints on a local path; object storage needs scale.backend=ray"):
        run_sweep(_sweep(tmp_path, "storage=s3://bucket/sweeps"))  # _sweep's trials run in process
    assert not list(tmp_path.rglob("optuna.db")), "nothing is written before the refusal"


def test_parallel_trials_on_ray_train_leave_every_cpu_to_their_workers(tmp_path, ray_session):
    """Two studies at once on 2 CPUs: each trial's driver function (the placement group Tune reserves for it) and
    its Ray Train worker (1 CPU) all fit, so neither study's worker group waits for the other's trial to end (with
    0.01 CPU per trial driver, 0.98 CPU stayed free and the second worker group waited, then timed out)."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory
    from ray.util.placement_group import placement_group, remove_placement_group

    from reasonbed.tune.driver import trial_resources

    cfg = _sweep(tmp_path, "studies_in_parallel=2", "train.scale.backend=ray")
    assert ray_session.cluster_resources()["CPU"] == 2
    groups = []
    try:
        for domain in ("photo", "sketch"):  # what Tune reserves for the trial, then what Ray Train asks for its worker
            groups.append(resource_dict_to_pg_factory(trial_resources(cfg, "direct", domain, 0)).to_placement_group())
            groups.append(placement_group([{"CPU": 1.0}], strategy="PACK"))
        ready, _ = ray_session.wait([group.ready() for group in groups], num_returns=len(groups), timeout=60)
        assert len(ready) == len(groups), ray_session.available_resources()
    finally:
        for group in groups:
            remove_placement_group(group)


def test_more_concurrent_trials_than_resources(tmp_path, ray_session):
    with pytest.raises(ConfigError, match="max_concurrent_trials 4 .* 8 CPU, but the cluster has 2 CPU"):
        run_sweep(_sweep(tmp_path, "max_concurrent_trials=4", "studies_in_parallel=2", "zero_shot=false"))
