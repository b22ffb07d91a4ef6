"""Stopping a sweep: Ctrl+C (SIGINT), SIGTERM (`ray job stop`) or a lost lease end it with its state saved.

`SweepControl` owns the driver's SIGINT and SIGTERM handlers for the length of a sweep. The first
signal stops the sweep:
- while a study's `Tuner.fit()` runs in this process, the stop is handed to Ray Tune's own graceful
  interrupt (its SIGUSR1 handler: trials are paused, the experiment state is saved, `fit()` returns and
  Tune logs "Experiment has been interrupted"); Tune's own SIGINT handler is switched off
  (TUNE_DISABLE_SIGINT_HANDLER=1) so that every signal reaches this class first;
- while studies run in parallel as Ray tasks, a `StopFlag` actor tells each of them, and each hands the
  stop to its own Tune the same way (`watch_stop_flag`);
- anywhere else (chain generation, zero-shot runs: both resumable) `SweepInterrupted` is raised at once.
No new study starts after a stop (`check()`), and the driver exits non-zero saying how to resume. A
second signal exits at once (exit code 130), without waiting for anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130  # the shell's code for a process ended by Ctrl+C
TUNE_STOP = signal.SIGUSR1  # Ray Tune's graceful-interrupt signal (ray.tune.tune._setup_signal_catching)


class SweepInterrupted(Exception):
    """The sweep was stopped; what finished is saved and the same command resumes it."""


def tune_interrupted(results: Any, expected: int = 0) -> bool:
    """Whether a Tuner.fit() ended by interruption: a trial that did not error has no final (`done`) result,
    or fewer than `expected` trials were created.

    Tune returns normally from an interrupted fit (it only logs "Experiment has been interrupted, but the
    most recent state was saved") and marks every trial TERMINATED on its way out, so statuses do not
    tell; but a trial that ended - its function returned, or a scheduler such as ASHA stopped it - has
    `done=True` in its last result (ray.tune's TuneController._process_trial_result).
    """
    unfinished = [result for result in results if result.error is None and not (result.metrics or {}).get("done")]
    return bool(unfinished) or len(results) < expected


def _quiet_tune_signal() -> None:
    """Ignore SIGUSR1 until a Tune run installs its handler: then 'a handler is set' means 'a fit listens'
    (and not the stale handler an earlier fit left behind)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(TUNE_STOP, signal.SIG_IGN)


def _hand_to_tune() -> bool:
    """Trigger Ray Tune's graceful interrupt in this process, if a Tune run is listening; True if it was."""
    if not callable(signal.getsignal(TUNE_STOP)):
        return False  # no Tune run listens (yet)
    os.kill(os.getpid(), TUNE_STOP)
    return True


def _interrupt_tune(until: threading.Event) -> None:
    """Hand the stop to this process's Tune run now, or as soon as it listens (unless `until` is set first)."""
    if _hand_to_tune():
        return

    def retry() -> None:
        while not until.wait(0.2):
            if _hand_to_tune():
                return

    threading.Thread(target=retry, name="sweep-stop-to-tune", daemon=True).start()


class SweepControl:
    """The driver's stop switch: signal handlers, the phase the sweep is in, the reason it stopped."""

    def __init__(self, resume_hint: str = "") -> None:
        self.reason = ""
        self.resume_hint = resume_hint
        self._phase = "idle"  # idle | tune | parallel
        self._phase_over = threading.Event()
        self._previous: dict[int, Any] = {}
        self._flag: Any = None  # the StopFlag actor of parallel studies

    @property
    def stopped(self) -> bool:
        return bool(self.reason)

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only; elsewhere signals stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("sweep driver not on the main thread: Ctrl+C handling is Ray Tune's alone")
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)

    def __enter__(self) -> SweepControl:
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def _on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        name = signal.Signals(signum).name
        if self.stopped:
            sys.stderr.write(f"\n{name} again: exiting now, without waiting for the running study to save its "
                             f"state.{(' ' + self.resume_hint) if self.resume_hint else ''}\n")
            sys.stderr.flush()
            os._exit(EXIT_CODE)
        sys.stderr.write(f"\n{name}: stopping the sweep - the running study saves its state, no new study starts "
                         f"(press Ctrl+C again to exit at once)\n")
        sys.stderr.flush()
        self.stop(f"{name} received")
        if self._phase == "idle":
            raise SweepInterrupted(self.reason)

    def stop(self, reason: str) -> None:
        """Stop the sweep (from a signal handler or any thread, e.g. the lease heartbeat's)."""
        if self.stopped:
            return
        self.reason = reason
        log.warning("sweep stopping: %s", reason)
        if self._phase == "tune":
            _interrupt_tune(self._phase_over)
        elif self._phase == "parallel" and self._flag is not None:
            self._flag.stop.remote(reason)

    def check(self) -> None:
        """Raise SweepInterrupted once the sweep was stopped (called before anything new starts)."""
        if self.stopped:
            raise SweepInterrupted(self.reason)

    @contextlib.contextmanager
    def phase(self, name: str, flag: Any = None) -> Iterator[None]:
        """Run a block as phase `tune` (a Tuner.fit in this process) or `parallel` (studies as Ray tasks)."""
        self.check()
        if name == "tune":
            _quiet_tune_signal()
        self._phase, self._flag, self._phase_over = name, flag, threading.Event()
        try:
            yield
        finally:
            self._phase_over.set()
            self._phase, self._flag = "idle", None


def stop_flag() -> Any:
    """A StopFlag actor (no resources): the driver sets it, studies running as Ray tasks read it."""
    import ray

    @ray.remote(num_cpus=0)
    class StopFlag:
        def __init__(self) -> None:
            self.reason = ""

        def stop(self, reason: str) -> None:
            self.reason = self.reason or reason

        def get(self) -> str:
            return self.reason

    return StopFlag.remote()


@contextlib.contextmanager
def watch_stop_flag(flag: Any, every: float = 1.0) -> Iterator[threading.Event]:
    """In a study running as a Ray task: poll `flag` and, once set, interrupt this process's Tune run.

    Yields an Event that is set once the flag was seen (so the task can tell an interrupted fit, and
    not start one).
    """
    import ray

    seen, done = threading.Event(), threading.Event()
    _quiet_tune_signal()

    def poll() -> None:
        while not done.wait(every):
            try:
                reason = ray.get(flag.get.remote(), timeout=30)
            except Exception as error:  # noqa: BLE001 - the driver is gone: this task ends with it anyway
                log.warning("stop flag unreachable: %s", error)
                continue
            if reason:
                seen.set()
                _interrupt_tune(done)
                return

    thread = threading.Thread(target=poll, name="sweep-stop-watch", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(timeout=every + 1)
