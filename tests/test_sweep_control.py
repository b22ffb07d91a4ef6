"""A sweep you can interrupt, resume and share: the driver's lease (local and S3), Ctrl+C through Ray Tune,
and - slow - a real sweep on S3 stopped by SIGINT, refused to a second driver, and finished by the same command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

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


def test_sigint_ends_a_tune_fit_gracefully_and_stops_the_sweep(tmp_path, ray_session):
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the trial function travels by value
    control = SweepControl()
    tuner = tune.Tuner(_slow_trial, param_space={"x": tune.grid_search([1, 2])},
                       tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="interrupt", storage_path=str(tmp_path), verbose=0))
    with control:
        threading.Timer(8.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        with control.phase("tune"):
            results = tuner.fit()
    assert time.monotonic() - started < 50  # not the 60 s of one trial, let alone two
    assert control.stopped and "SIGINT" in control.reason
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
