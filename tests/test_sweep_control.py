"""A sweep you can interrupt, resume and share: the driver's lease (local and S3), Ctrl+C through Ray Tune,
and - slow - one real sweep on S3 refused to a second driver, stopped by SIGINT, resumed on a new head from
s3:// alone, killed, and finished by the same command with each trial ending once; parallel studies stopped
by SIGINT and finished, that sweep's early stops and report."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import RANDOM_MODEL
from reasonbed import storage
from reasonbed.tune.control import SweepControl, tune_interrupted
from reasonbed.tune.lease import LEASE, Holder, Lease, LeaseHeldError, LeaseLostError

REPO = Path(__file__).resolve().parents[1]


def _age_lease(uri: str, seconds: float) -> None:
    """Simulate a driver that stopped heart-beating `seconds` ago (its host was lost)."""
    fs, path = storage.filesystem(storage.join(uri, LEASE))
    holder = Holder.from_bytes(fs.cat_file(path))
    holder.heartbeat -= seconds
    fs.pipe_file(path, holder.to_bytes())


@pytest.fixture(params=["local", "s3"])
def sweep_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "sweep")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/leases/{uuid.uuid4().hex[:8]}"


def test_second_driver_is_refused_naming_the_first_and_admitted_after_expiry(sweep_uri):
    first = Lease(sweep_uri, expiry_s=60)
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError) as refused:
            Lease(sweep_uri, expiry_s=60).acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and "last heartbeat" in message and "--force" in message
        assert first.holder.host in message
        _age_lease(sweep_uri, 120)  # no heartbeat for longer than the expiry
        second = Lease(sweep_uri, expiry_s=60)
        second.acquire()  # admitted without --force: an expired lease is taken over on its own
        with pytest.raises(LeaseLostError, match="taken over"):
            first.refresh()  # the first driver learns it at its next heartbeat
        second.release()
        fs, path = storage.filesystem(storage.join(sweep_uri, LEASE))
        assert not fs.exists(path)  # released on a clean exit
    finally:
        first._stop.set()


def test_force_takes_a_live_lease_and_the_old_driver_stops(sweep_uri):
    lost = threading.Event()
    first = Lease(sweep_uri, expiry_s=10, on_lost=lambda reason: lost.set())  # heartbeats every 2.5 s
    first.acquire()
    with pytest.raises(LeaseHeldError):
        Lease(sweep_uri, expiry_s=10).acquire()
    second = Lease(sweep_uri, expiry_s=10, force=True)
    second.acquire()
    assert lost.wait(10), "the driver that lost its lease was not told"
    assert "taken over" in first.lost
    first.release()  # leaves the new holder's lease alone
    current = second.read()
    assert current is not None and current.token == second.holder.token
    second.release()


def test_lease_of_a_dead_driver_on_this_host_is_taken_at_once(sweep_uri):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = Holder.mine(300)
    holder.pid = int(dead.stdout)
    storage.write_bytes(storage.join(sweep_uri, LEASE), holder.to_bytes())
    lease = Lease(sweep_uri, expiry_s=300)
    lease.acquire()  # no waiting for the 300 s expiry: that process is gone
    assert lease.read().token == lease.holder.token
    lease.release()


def test_two_drivers_racing_for_a_new_lease_one_wins(sweep_uri):
    leases = [Lease(sweep_uri, expiry_s=60) for _ in range(4)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(leases))

    def race(lease: Lease) -> None:
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("won")
        except LeaseHeldError:
            outcomes.append("refused")

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["won"]
    winner = next(lease for lease in leases if lease._thread is not None)
    assert winner.read().token == winner.holder.token
    for lease in leases:
        lease._stop.set()
    winner.release()


def _slow_trial(config):
    from ray import tune

    for step in range(config.get("steps", 600)):
        time.sleep(0.1)
        tune.report({"step": step, "score": config["x"] * step})
        if config.get("started") and step == 2:  # the test's cue: a trial is running and reporting
            Path(config["started"]).touch()


def _signal_when(path: Path, sig: int, timeout: float = 60.0) -> None:
    """Send `sig` to this process once `path` exists (a trial is running), from a thread."""
    def wait_and_send() -> None:
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), sig)

    threading.Thread(target=wait_and_send, daemon=True).start()


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])  # Ctrl+C; `ray job stop`
def test_sigint_ends_a_tune_fit_gracefully_and_stops_the_sweep(stop, tmp_path, ray_session):
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the trial function travels by value
    control = SweepControl()
    started_marker = tmp_path / "started"
    tuner = tune.Tuner(_slow_trial, param_space={"x": tune.grid_search([1, 2]), "started": str(started_marker)},
                       tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="interrupt", storage_path=str(tmp_path), verbose=0))
    with control:
        _signal_when(started_marker, getattr(signal, stop))
        started = time.monotonic()
        with control.phase("tune"):
            results = tuner.fit()
    assert time.monotonic() - started < 50  # not the 60 s of one trial, let alone two
    assert control.stopped and stop in control.reason
    assert tune_interrupted(results, expected=2)  # Tune saved its state with unfinished trials: restorable
    assert not any(result.metrics.get("done") for result in results)
    assert tune.Tuner.can_restore(str(tmp_path / "interrupt"))
    assert signal.getsignal(signal.SIGINT) is not control._on_signal  # handlers given back


def test_a_finished_fit_is_not_taken_for_an_interrupted_one(tmp_path, ray_session):
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tuner = tune.Tuner(_slow_trial, param_space={"x": tune.grid_search([1, 2]), "steps": 3},
                       tune_config=tune.TuneConfig(metric="score", mode="max"),
                       run_config=tune.RunConfig(name="finished", storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert not tune_interrupted(results, expected=2)
    assert tune_interrupted(results, expected=3)  # a trial the search never created


def test_control_raises_outside_a_tune_run_and_blocks_new_studies():
    from reasonbed.tune.control import SweepInterrupted

    with SweepControl() as control:
        with pytest.raises(SweepInterrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        with pytest.raises(SweepInterrupted), control.phase("tune"):
            pytest.fail("a study started after the stop")


def _s3():
    import s3fs

    return s3fs.S3FileSystem()


def _wait_for(predicate, what: str, process: subprocess.Popen | None = None, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"the driver ended (status {process.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_an_s3_sweep_is_refused_stopped_moved_killed_and_finished_each_trial_once(tmp_path, s3_bucket, ray_session):
    """One sweep on S3 through every way a driver ends, the same command each time: a second driver is refused
    naming the first; the report and the study copy reach s3:// after the first study; SIGINT stops it between
    the second study's trials (exit 130, lease released); a new head (no local study file) resumes it from
    s3:// and is SIGKILLed inside a study; the last run finishes it: every trial ends once, nothing is rerun."""
    import optuna

    from reasonbed.tune.records import load_records

    sweep = f"{s3_bucket}/sweeps/ctl"
    domains = ("photo", "sketch")  # no new study after SIGINT: the parallel-studies scenario below
    command = [sys.executable, str(REPO / "jobs" / "tune.py"), "--smoke-test", f"--storage=s3://{s3_bucket}/sweeps",
               "--name=ctl", "methods=[direct]", f"test_domains=[{','.join(domains)}]", "num_samples=2",
               "studies_in_parallel=1", "zero_shot=false", "data.images_per_class=3", "train.optim.max_steps=6",
               "train.eval.every=3", "train.eval.max_per_domain=4", "asha.grace_period=48", "asha.max_t=96",
               "lease_expiry_s=60", "train.scale.backend=ray",  # Ray Train: checkpoints on s3://
               f"train.{RANDOM_MODEL}"]  # control, not learning: runs while the pretrained model builds
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    local_db = tmp_path / "runs" / "ctl" / "optuna.db"  # the driver's study file (local_root runs/ in its cwd)
    fs = _s3()

    def finished_trials(study: str) -> int:
        """Finished trials of `study` in the driver's study file, read-only (never created or changed here)."""
        if not local_db.exists():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(f"file:{local_db}?mode=ro", uri=True)) as db:
                return db.execute("SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ? "
                                  "AND state IN ('COMPLETE', 'PRUNED')", (study,)).fetchone()[0]
        except sqlite3.Error:  # being downloaded or created
            return 0

    log = tmp_path / "first.log"
    with open(log, "w") as handle:
        first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: fs.exists(f"{sweep}/{LEASE}"), "the lease", first)
        second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert second.returncode == 3, second.stderr[-3000:]
        assert "another driver runs this sweep" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "last heartbeat" in second.stderr and "--force" in second.stderr

        # after the first study: its report and the Optuna study are in the sweep storage, the sweep still runs
        _wait_for(lambda: fs.exists(f"{sweep}/report/report.html") and fs.exists(f"{sweep}/optuna.db"),
                  "the report and the study copy", first)
        assert first.poll() is None, "the sweep ended before its report could be seen in s3://"
        assert fs.exists(f"{sweep}/direct-photo-s0/done")
        assert fs.exists(f"{sweep}/report/trials.csv") and fs.exists(f"{sweep}/report/report.md")
        photo = sorted(r.trial_id for r in load_records(f"s3://{sweep}") if r.test_domain == "photo")
        assert len(photo) == 2 and fs.exists(f"{sweep}/direct-photo-s0/trial_{photo[0]}/trial.json")

        _wait_for(lambda: fs.glob(f"{sweep}/direct-sketch-s0/trial_*/trial.json"), "a trial of study 2", first)
        first.send_signal(signal.SIGINT)
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    output = log.read_text()
    assert first.returncode == 130, output[-4000:]
    assert "stopped (SIGINT received)" in output and "Resume with the same command:" in output
    fs.invalidate_cache()
    assert not fs.exists(f"{sweep}/direct-sketch-s0/done")
    assert not fs.exists(f"{sweep}/{LEASE}"), "the lease was not released"

    # a new head node: the driver's local study file is gone; the same command restores it from s3:// first
    assert local_db.is_file()
    shutil.rmtree(tmp_path / "runs")
    with open(tmp_path / "third.log", "w") as handle:
        third = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: finished_trials("direct-photo-s0") == 2, "the study copy downloaded", third)
        _wait_for(lambda: finished_trials("direct-sketch-s0") and fs.glob(
            f"{sweep}/direct-sketch-s0/experiment_state-*.json"), "a finished trial of the resumed study", third)
    finally:
        third.kill()  # SIGKILL: no handler, no lease release, no backup
        third.wait()
    fs.invalidate_cache()
    assert not fs.exists(f"{sweep}/direct-sketch-s0/done") and not fs.exists(f"{sweep}/done")

    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-4000:]  # the dead driver's lease (this host) is taken at once
    fs.invalidate_cache()
    assert all(fs.exists(f"{sweep}/direct-{d}-s0/done") for d in domains)
    storage.filesystem(f"s3://{sweep}")[0].invalidate_cache()  # the listing load_records cached after study 1
    records = load_records(f"s3://{sweep}")
    assert len(records) == 4 and len({r.trial_id for r in records}) == 4
    assert all(r.status in ("completed", "stopped") and r.reports for r in records)
    assert sorted(r.trial_id for r in records if r.test_domain == "photo") == photo, "a finished study was rerun"
    study_db = tmp_path / "study.db"
    fs.get(f"{sweep}/optuna.db", str(study_db))
    for domain in domains:
        trials = optuna.load_study(study_name=f"direct-{domain}-s0", storage=f"sqlite:///{study_db}").trials
        finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(finished) == 2 and not [t for t in trials if t.state.name == "RUNNING"], domain
        assert len({t.user_attrs["tune_trial_id"] for t in finished}) == 2, domain
        if domain != "sketch":  # the killed study may keep its killed draw, closed as failed
            assert len(trials) == 2, domain
    assert "- trials: 4" in fs.cat_file(f"{sweep}/report/report.md").decode()


# A space where some draws cannot learn within the budget (lr 1e-7), so ASHA has to stop them.
STOPPABLE_SPACE = """\
params:
  optim.lr: {choice: [1.0e-7, 5.0e-3], default: 5.0e-3}
  lora.dropout: {uniform: [0.0, 0.1], default: 0.05}
"""


@pytest.mark.slow
@pytest.mark.pretrained_model
def test_sigint_stops_parallel_studies_and_the_finished_sweep_is_asha_pruned_and_reported(tmp_path, ray_session):
    """A sweep of 3 test domains x 2 draws of `direct`, two studies at once, trials in process (their actors
    reused): SIGINT with a trial running in each of the two parallel studies stops both (exit 130, the third
    study not started, lease released); the same command finishes the sweep. Then, of the whole sweep: each study's first
    draw is the defaults (DomainBed) and its second is not (in the restored studies too), ASHA stopped some
    draws and each stop is a PRUNED Optuna trial marked stopped_by=asha, the report has every domain and the
    ORACLE table, trials.csv a row per trial, and every record its provenance."""
    import optuna

    from reasonbed.data import synthetic
    from reasonbed.tune.records import load_records
    from reasonbed.tune.spaces import load_space

    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "default.yaml").write_text(STOPPABLE_SPACE)
    (spaces / "direct.yaml").write_text("params: {}\n")
    sweep = tmp_path / "runs" / "parallel"
    domains = synthetic.STYLES[:3]  # the studies run in this order, two at a time
    one, two, later = domains
    command = [sys.executable, str(REPO / "jobs" / "tune.py"), "--smoke-test", f"--storage={tmp_path / 'runs'}",
               "--name=parallel", "methods=[direct]", f"test_domains=[{','.join(domains)}]", "num_samples=2",
               "studies_in_parallel=2", "zero_shot=false",
               f"search_spaces={spaces}", "data.images_per_class=3", "data.palette=by_class",
               "train.optim.max_steps=16", "train.optim.batch_size=16", "train.eval.every=8",
               "train.eval.max_per_domain=4", "asha.grace_period=128", "asha.max_t=256",  # examples: one rung
               "train.scale.backend=local"]  # trials in process: a restored trial resumes from its own checkpoints
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        _wait_for(lambda: all(list((sweep / f"direct-{d}-s0").glob("trial_*/trial.json")) for d in (one, two)),
                  "a trial in each of the two parallel studies", first)
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, output[-4000:]
    assert output.count("interrupted: its state is saved") >= 2 or "Experiment has been interrupted" in output
    assert not (sweep / f"direct-{one}-s0" / "done").exists() and not (sweep / f"direct-{two}-s0" / "done").exists()
    assert not (sweep / f"direct-{later}-s0").exists(), "a new study started after Ctrl+C"
    assert not (sweep / LEASE).exists()
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-4000:]
    assert all((sweep / f"direct-{d}-s0" / "done").exists() for d in domains)

    records = load_records(str(sweep))
    assert len(records) == 6 and {r.test_domain for r in records} == set(domains)
    statuses = [r.status for r in records]
    assert set(statuses) == {"completed", "stopped"}, statuses
    study_storage = f"sqlite:///{tmp_path / 'runs' / 'parallel' / 'optuna.db'}"
    defaults = load_space(spaces, "direct", "synthetic_shapes").defaults()
    states: dict[str, int] = {}
    for domain in domains:
        trials = optuna.load_study(study_name=f"direct-{domain}-s0", storage=study_storage).trials
        assert min(trials, key=lambda trial: trial.number).params == pytest.approx(defaults), domain
        assert trials[0].params != trials[1].params, f"{domain}: a study drew the same hyperparameters twice"
        for trial in trials:
            states[trial.state.name] = states.get(trial.state.name, 0) + 1
            if trial.state == optuna.trial.TrialState.PRUNED:
                assert trial.user_attrs["stopped_by"] == "asha" and trial.intermediate_values
    assert states.get("COMPLETE", 0) >= 3 and states.get("PRUNED", 0) >= 1, states
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 6
    assert statuses.count("stopped") == states["PRUNED"]  # every early stop is told apart in the study
    markdown = (sweep / "report" / "report.md").read_text()
    assert all(domain in markdown for domain in domains) and "ORACLE" in markdown
    assert (sweep / "report" / "trials.csv").read_text().count("\n") == 1 + 6  # header + a row per trial
    for record in records:  # every number traces to its run
        assert record.provenance["data_manifest_sha256"] and record.provenance["config"]["method"] == "direct"
