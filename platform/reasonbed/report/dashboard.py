"""Dashboards of a sweep: optuna-dashboard on its Optuna storage and TensorBoard on its folder.

    python -m reasonbed dashboard runs/<sweep> [--host 127.0.0.1] [--optuna-port 8080] [--tensorboard-port 6006]

Both run as child processes of this one, with this environment's Python, bound to 127.0.0.1 by
default (they have no authentication: reach them from elsewhere through an SSH tunnel rather than
`--host 0.0.0.0`). Ctrl-C (or SIGTERM) stops both. For an s3:// sweep the Optuna storage is the
sweep's `study_storage`, or its `optuna.db` copy downloaded to a temporary directory, and
TensorBoard reads a snapshot of the trials' event files copied to that directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from reasonbed import storage
from reasonbed.report.sources import redact_url, resolve_study_storage
from reasonbed.tune.records import read_sweep

DEFAULT_HOST = "127.0.0.1"
DEFAULT_OPTUNA_PORT = 8080
DEFAULT_TENSORBOARD_PORT = 6006
RAY_DASHBOARD = "127.0.0.1:8265"


def _console_script(name: str, python: str) -> str | None:
    """The console script `name` installed beside `python` (the same environment), if any."""
    for candidate in (Path(python).parent / name, Path(python).parent / f"{name}.exe"):
        if candidate.is_file():
            return str(candidate)
    return None


def dashboard_commands(storage_url: str, logdir: str, host: str = DEFAULT_HOST,
                       optuna_port: int = DEFAULT_OPTUNA_PORT, tensorboard_port: int = DEFAULT_TENSORBOARD_PORT,
                       python: str | None = None) -> dict[str, list[str]]:
    """The command lines of both dashboards (nothing is started)."""
    python = python or sys.executable
    script = _console_script("optuna-dashboard", python)
    optuna = [script] if script else [python, "-c", "import sys; from optuna_dashboard._cli import main; "
                                                    "sys.exit(main())"]
    return {
        "optuna-dashboard": [*optuna, storage_url, "--host", host, "--port", str(optuna_port)],
        "tensorboard": [python, "-m", "tensorboard.main", "--logdir", logdir, "--host", host,
                        "--port", str(tensorboard_port)],
    }


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP server answers at url (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def check_port(host: str, port: int, flag: str) -> None:
    """Fail clearly when the port is taken, before starting anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as error:
            raise ValueError(f"cannot listen on {host}:{port} ({error.strerror}); choose another with {flag}") \
                from None


def tensorboard_logdir(sweep_uri: str, tmp_dir: str | Path) -> str:
    """The sweep folder itself, or for an object store a local snapshot of its event files."""
    if not storage.is_remote(sweep_uri):
        return str(Path(sweep_uri).resolve())
    fs, base = storage.filesystem(sweep_uri)
    local = Path(tmp_dir) / "tensorboard"
    for path in fs.glob(f"{base}/**/events.out.tfevents.*"):
        target = local / path[len(base):].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get(path, str(target))
    local.mkdir(parents=True, exist_ok=True)
    return str(local)


def ray_dashboard_hint() -> str:
    if answers(f"http://{RAY_DASHBOARD}", timeout=0.5):
        return f"Ray dashboard: http://{RAY_DASHBOARD} (a local Ray with its dashboard answers there)"
    return (f"Ray dashboard: http://{RAY_DASHBOARD} while a local Ray with its dashboard runs (e.g. during a "
            f"sweep, or `ray start --head --include-dashboard=true`); for a cluster, `ray dashboard "
            f"cluster/aws.yaml` forwards it to that address.")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(processes: dict[str, subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM each child's process group, then SIGKILL whatever is left `grace` seconds later (one deadline
    for all children, so Ctrl-C returns within about `grace` seconds however many there are)."""
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes.values():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_dashboard(sweep_uri: str, host: str = DEFAULT_HOST, optuna_port: int = DEFAULT_OPTUNA_PORT,
                  tensorboard_port: int = DEFAULT_TENSORBOARD_PORT, ready_timeout: float = 60.0,
                  out: IO[str] | None = None) -> int:
    """Start both dashboards and keep them running until Ctrl-C / SIGTERM; 1 if one of them dies."""
    out = out or sys.stdout
    say: Callable[[str], None] = lambda text: print(text, file=out, flush=True)  # noqa: E731
    sweep = read_sweep(sweep_uri)
    check_port(host, optuna_port, "--optuna-port")
    check_port(host, tensorboard_port, "--tensorboard-port")
    tmp = Path(tempfile.mkdtemp(prefix="reasonbed-dashboard-"))
    processes: dict[str, subprocess.Popen] = {}
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        def _interrupt(signum: int, frame: object) -> None:  # noqa: ARG001
            raise KeyboardInterrupt
        # SIGINT too, explicitly: a process started in the background of a script inherits SIGINT ignored,
        # and Python then keeps ignoring it (`kill -INT` did nothing: the dashboards ran on)
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        storage_url = resolve_study_storage(sweep_uri, sweep, tmp)
        if storage_url is None:
            raise FileNotFoundError(f"{sweep_uri!r}: no Optuna storage found ({sweep.get('study_storage')!r} "
                                    f"is not on this machine and the folder has no optuna.db)")
        logdir = tensorboard_logdir(sweep_uri, tmp)
        commands = dashboard_commands(storage_url, logdir, host, optuna_port, tensorboard_port)
        urls = {"optuna-dashboard": url_for(host, optuna_port), "tensorboard": url_for(host, tensorboard_port)}
        for name, command in commands.items():
            log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it; closed below
            processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
        say(f"sweep {sweep.get('name', sweep_uri)}: Optuna storage {redact_url(storage_url)}, "
            f"TensorBoard logdir {logdir}")
        for name, url in urls.items():
            say(f"{name}: {url}  (pid {processes[name].pid})")
        say(ray_dashboard_hint())
        if host not in ("127.0.0.1", "localhost", "::1"):
            say(f"warning: listening on {host}: these dashboards have no authentication")
        deadline, ready = time.monotonic() + ready_timeout, False
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    say(f"error: {name} exited with code {process.returncode}; its log:\n"
                        f"{_tail(tmp / f'{name}.log')}")
                    return 1
            if not ready and all(answers(url) for url in urls.values()):
                ready = True
                say("dashboards ready; press Ctrl-C to stop them")
            elif not ready and time.monotonic() > deadline:
                ready = True  # warn once, keep waiting on the children
                say(f"warning: not every dashboard answers after {ready_timeout:.0f} s; still running")
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("stopping the dashboards")
        return 0
    finally:
        _stop(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(tmp, ignore_errors=True)
