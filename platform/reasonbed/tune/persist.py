"""What of a sweep is written outside Ray Tune's own storage, and how it reaches the sweep storage.

The sweep storage (`<storage>/<sweep>`, local or s3://) holds everything a report needs, during the
run: sweep.json, each trial's trial.json, provenance.json and lodo.json (written there by the trial
itself), Tune's result files and state (Tune syncs them), the zero-shot records, and - when the
Optuna study is a SQLite file on the driver's disk - a consistent copy of it, `optuna.db`, refreshed
after every finished trial (`study_backup_callback`) and every study. A driver whose SQLite file is
missing (a new head node, a new job working_dir) downloads that copy first (`restore_study_db`), so a
lost head loses at most the trials in flight. An external RDB (`study_storage=postgresql://...`) is used
as it is and nothing is copied.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from reasonbed import storage

log = logging.getLogger(__name__)

STUDY_DB = "optuna.db"  # the copy of a SQLite Optuna study in the sweep storage
_backup_lock = threading.Lock()


def write_json(uri: str, content: Any) -> None:
    """Write JSON to a local path or URL, creating parent folders."""
    storage.write_bytes(uri, json.dumps(content, indent=2, default=str).encode())


def sqlite_file(study_url: str) -> Path | None:
    """The file of a sqlite:/// Optuna URL, or None for another database."""
    return Path(study_url[len("sqlite:///"):]) if study_url.startswith("sqlite:///") else None


def needs_copy(study_url: str, sweep_uri: str) -> bool:
    """Whether the study lives on the driver's disk while the sweep storage is elsewhere (an object store)."""
    return sqlite_file(study_url) is not None and storage.is_remote(sweep_uri)


def restore_study_db(study_url: str, sweep_uri: str) -> bool:
    """Download the sweep storage's optuna.db when the driver's SQLite file is missing; True if it did."""
    local = sqlite_file(study_url)
    if local is None or local.exists() or not needs_copy(study_url, sweep_uri):
        return False
    fs, path = storage.filesystem(storage.join(sweep_uri, STUDY_DB))
    if not fs.exists(path):
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    fs.get(path, str(local))
    log.info("Optuna study restored from %s to %s", storage.join(sweep_uri, STUDY_DB), local)
    return True


def backup_study_db(study_url: str, sweep_uri: str) -> None:
    """Upload a consistent snapshot (SQLite's online backup) of the driver's study file to the sweep storage."""
    local = sqlite_file(study_url)
    if local is None or not local.exists() or not needs_copy(study_url, sweep_uri):
        return
    with _backup_lock, tempfile.TemporaryDirectory(prefix="reasonbed-optuna-") as tmp:
        snapshot = Path(tmp) / STUDY_DB
        source, target = sqlite3.connect(str(local), timeout=60), sqlite3.connect(str(snapshot))
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        fs, path = storage.filesystem(storage.join(sweep_uri, STUDY_DB))
        fs.put(str(snapshot), path)


def study_backup_callback(study_url: str, sweep_uri: str) -> Any:
    """A Ray Tune callback that copies the study to the sweep storage after every finished trial (or None)."""
    if not needs_copy(study_url, sweep_uri):
        return None
    from ray.tune import Callback

    class StudyBackup(Callback):
        def _backup(self) -> None:
            try:
                backup_study_db(study_url, sweep_uri)
            except Exception as error:  # noqa: BLE001 - retried after the next trial and at the study's end
                log.warning("Optuna study copy to %s failed: %s", sweep_uri, error)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:  # noqa: ARG002
            self._backup()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:  # noqa: ARG002
            self._backup()

    return StudyBackup()
