"""One driver per sweep: a lease object in the sweep storage, kept alive by a heartbeat thread.

The lease (`<sweep>/driver.lease`, JSON) names its driver - host, pid, start time, the command, a
random token - and its last heartbeat. A driver takes it before it touches the sweep, refreshes it
every `expiry/4` seconds (at most 30 s) and deletes it on a clean exit. A second driver finds a live
lease and stops with `LeaseHeldError` naming the running one and how to take over. A lease whose
heartbeat is older than its expiry (its driver died with its host), or whose driver is a dead process
on this very host, is taken over on its own; `force=True` (`reasonbed tune --force`) takes over a live
one at once - the driver that held it finds the lease gone at its next heartbeat and stops its sweep.

Atomicity, per store:
- local: every read-decide-write happens under an exclusive `flock` of `driver.lease.lock`, the lease
  itself is written to a temporary file and renamed over (readers never see half a file);
- S3: conditional writes - create with `If-None-Match: *`, heartbeat and take-over with `If-Match:
  <ETag>` of the version read, release with a conditional delete - so of two drivers racing, one wins;
- other object stores: write, wait `SETTLE_S`, read back and compare the token: best effort only.
Heartbeats compare wall clocks of different hosts: keep them in sync (NTP) or the expiry generous.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from reasonbed import storage

log = logging.getLogger(__name__)

LEASE = "driver.lease"
SETTLE_S = 2.0  # best-effort stores: how long a written lease must survive before it counts as taken


class LeaseHeldError(RuntimeError):
    """Another driver holds the sweep's lease."""


class LeaseLostError(RuntimeError):
    """The lease this driver held was taken over (or removed) by someone else."""


@dataclass
class Holder:
    """Who holds a lease and since when (the lease object's content)."""

    host: str
    pid: int
    started: float  # epoch seconds when the driver took the lease
    token: str  # random: tells this driver's lease from any other
    heartbeat: float  # epoch seconds of the last refresh
    expiry_s: float  # a heartbeat older than this lets another driver take over
    command: str = ""

    @classmethod
    def mine(cls, expiry_s: float) -> Holder:
        now = time.time()
        return cls(host=socket.gethostname(), pid=os.getpid(), started=now, token=secrets.token_hex(8),
                   heartbeat=now, expiry_s=float(expiry_s), command=" ".join(sys.argv))

    def age(self, now: float | None = None) -> float:
        return (now or time.time()) - self.heartbeat

    def expired(self, now: float | None = None) -> bool:
        return self.age(now) > self.expiry_s

    def dead_here(self) -> bool:
        """Held by a process of this host that no longer exists (a killed driver: no need to wait)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        def when(seconds: float) -> str:
            return datetime.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")

        return (f"host {self.host}, pid {self.pid}, started {when(self.started)}, last heartbeat "
                f"{when(self.heartbeat)} ({self.age():.0f} s ago), expiry {self.expiry_s:g} s"
                + (f", command: {self.command}" if self.command else ""))

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder:
        values = json.loads(data)
        return cls(**{key: values[key] for key in cls.__dataclass_fields__ if key in values})


class Lease:
    """The lease of one sweep folder (local path or URL); a context manager that takes and releases it."""

    def __init__(self, sweep_uri: str, expiry_s: float = 300.0, force: bool = False,
                 on_lost: Callable[[str], None] | None = None) -> None:
        if expiry_s <= 0:
            raise ValueError(f"lease expiry must be > 0 s, got {expiry_s}")
        self.uri = storage.join(sweep_uri, LEASE)
        self.fs, self.path = storage.filesystem(self.uri)
        self.holder = Holder.mine(expiry_s)
        self.force, self.on_lost = force, on_lost
        self.local = not storage.is_remote(sweep_uri)
        self.s3 = sweep_uri.startswith(("s3://", "s3a://"))
        self._seen_etag: str | None = None  # S3: the ETag of the lease as last read (conditional writes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str = ""  # why the lease was lost, once it was

    @property
    def interval(self) -> float:
        return min(30.0, self.holder.expiry_s / 4)

    # --- reading and writing, per store -------------------------------------------------------------------

    def read(self) -> Holder | None:
        """The current holder, or None when there is no lease (or it cannot be parsed: treated as absent)."""
        try:
            if self.s3:  # the ETag first: if the lease changes before it is read, the conditional write fails
                self._seen_etag = self.fs.info(self.path, refresh=True).get("ETag")
                data = self.fs.cat_file(self.path)
            else:
                data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            return Holder.from_bytes(data)
        except (ValueError, TypeError) as error:
            log.warning("sweep lease %s cannot be read (%s): treated as absent", self.uri, error)
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Local stores: an exclusive flock around read-decide-write; others: nothing (see the module docstring)."""
        if not self.local:
            yield
            return
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, create: bool, etag: str | None) -> bool:
        """Write our holder: only if absent (`create`), else only over version `etag` (S3). False: lost a race."""
        data = self.holder.to_bytes()
        if self.local:
            temporary = f"{self.path}.{self.holder.token}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            return True
        if self.s3:
            try:
                if create:
                    out = self.fs.pipe_file(self.path, data, mode="create")
                else:
                    out = self.fs.pipe_file(self.path, data, IfMatch=etag)
            except FileExistsError:
                return False
            except OSError as error:
                if "PreconditionFailed" in repr(error.__cause__) or "pre-conditions" in str(error):
                    return False
                raise
            self._seen_etag = (out or {}).get("ETag")
            return True
        self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)  # best effort: write, settle, read back
        self.fs.pipe_file(self.path, data)
        time.sleep(SETTLE_S)
        current = self.read()
        return current is not None and current.token == self.holder.token

    # --- the lease's life --------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming the driver that holds it."""
        for _ in range(5):  # a lost race re-reads and decides again
            with self._locked():
                current = self.read()
                etag = self._seen_etag
                if current is not None and current.token == self.holder.token:
                    break  # our own write, retried after an uncertain outcome
                if current is not None and not (current.expired() or current.dead_here() or self.force):
                    raise LeaseHeldError(self._held_message(current))
                if current is not None:
                    reason = ("forced" if not (current.expired() or current.dead_here()) else
                              "its driver is gone" if current.dead_here() else "expired")
                    log.warning("sweep lease %s: taking over (%s) from %s", self.uri, reason, current.describe())
                self.holder.heartbeat = time.time()
                if self._write(create=current is None, etag=etag):
                    break
        else:
            raise LeaseHeldError(f"sweep lease {self.uri}: lost the race to take it five times; "
                                 f"another driver is starting on this sweep")
        log.info("sweep lease %s taken (%s)", self.uri, self.holder.describe())
        self._thread = threading.Thread(target=self._beat, name="sweep-lease-heartbeat", daemon=True)
        self._thread.start()

    def _held_message(self, current: Holder) -> str:
        left = max(0.0, current.expiry_s - current.age())
        return (f"another driver runs this sweep: {current.describe()}. Lease: {self.uri}. Stop that driver "
                f"(Ctrl+C, or `ray job stop` for a submitted job) and rerun the same command; if that driver is "
                f"dead, its lease expires in {left:.0f} s (then the same command takes over), or rerun with "
                f"--force to take over now (a live driver that held it stops at its next heartbeat)")

    def refresh(self) -> None:
        """Renew the heartbeat; LeaseLostError if another driver has taken the lease (or it was removed)."""
        with self._locked():
            current = self.read()
            if current is None or current.token != self.holder.token:
                by = current.describe() if current else "nobody (the lease was removed)"
                raise LeaseLostError(f"sweep lease {self.uri} was taken over by {by}")
            self.holder.heartbeat = time.time()
            if not self._write(create=False, etag=self._seen_etag):
                raise LeaseLostError(f"sweep lease {self.uri} changed while it was renewed")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except LeaseLostError as error:
                self.lost = str(error)
                log.error("%s: this driver stops its sweep", error)
                if self.on_lost:
                    self.on_lost(self.lost)
                return
            except Exception as error:  # noqa: BLE001 - a storage hiccup: try again at the next beat
                log.warning("sweep lease %s: heartbeat failed (%s); retrying in %.0f s", self.uri, error,
                            self.interval)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        if self.lost:
            return
        try:
            with self._locked():
                current = self.read()
                if current is None or current.token != self.holder.token:
                    return
                if self.s3:
                    bucket, key = self.path.split("/", 1)
                    self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self._seen_etag)
                    self.fs.invalidate_cache(self.path)
                else:
                    self.fs.rm(self.path)
        except OSError as error:  # the lease then expires on its own
            log.warning("sweep lease %s could not be released (%s): it expires on its own", self.uri, error)
        else:
            log.info("sweep lease %s released", self.uri)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
