"""What a report or a dashboard reads from a sweep folder (local or s3://), gathered in one place.

`load_sweep()` returns the sweep description, every trial record (through `records.load_records`,
so s3:// works via `storage.filesystem`), the zero-shot records, the protocol that produced them, the
class names (for the chance level), the test domains in sweep order, which trials train on teacher
chains and the teacher's token counts from `<chains>/manifest.json`.
`resolve_study_storage()` finds a usable Optuna storage URL: the sweep's `study_storage`, or - when
that is a SQLite file missing on this machine - the `optuna.db` copy kept in the sweep folder
(downloaded to a temporary directory for an s3:// sweep).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonbed import storage
from reasonbed.redaction import redact_url  # noqa: F401 - re-exported for the report and dashboard
from reasonbed.tune.config import protocol
from reasonbed.tune.records import TrialRecord, load_records, load_zero_shot, read_sweep

log = logging.getLogger(__name__)


@dataclass
class SweepData:
    """A sweep as the report sees it."""

    uri: str
    sweep: dict[str, Any]
    records: list[TrialRecord]
    domains: list[str]
    methods: list[str]
    trial_chains: dict[str, str] = field(default_factory=dict)  # trial record path -> its chains URI or ""
    uses_chains: dict[str, bool] = field(default_factory=dict)  # trial record path -> trains on chains
    chain_tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # chains location -> token counts
    zero_shot: list[TrialRecord] = field(default_factory=list)  # the base model per (test domain, trial seed)

    @property
    def protocol(self) -> dict[str, Any]:
        """search, early_stopping, num_samples, seeds (reasonbed.tune.config.protocol of the saved config)."""
        return protocol(self.sweep.get("config") or {})

    @property
    def classes(self) -> list[str]:
        """The class names (sweep.json's `classes`; empty for sweeps saved before it existed)."""
        return [str(name) for name in self.sweep.get("classes") or []]

    @property
    def name(self) -> str:
        return str(self.sweep.get("name") or self.uri.rstrip("/").rsplit("/", 1)[-1])

    def method_tokens(self, method: str) -> dict[str, int]:
        """Teacher tokens behind a method: every chains output its trials trained on, each counted once."""
        locations = {self._chains_of(r) for r in self.records if r.method == method and self.uses_chains.get(r.path)}
        return _sum_tokens(self.chain_tokens.get(loc, {}) for loc in locations if loc)

    def total_tokens(self) -> dict[str, int]:
        """Teacher tokens of the whole sweep, each chains output counted once."""
        used = {self._chains_of(r) for r in self.records if self.uses_chains.get(r.path)}
        return _sum_tokens(self.chain_tokens.get(loc, {}) for loc in used if loc)

    def _chains_of(self, record: TrialRecord) -> str:
        return self.trial_chains.get(record.path, "")


def _sum_tokens(parts: Any) -> dict[str, int]:
    total = dict.fromkeys(CHAIN_COUNTS, 0)
    for part in parts:
        for key in total:
            total[key] += int(part.get(key) or 0)
    return total


def _method_needs_chains(method: str) -> bool | None:
    """Whether the registered method trains on chains; None for a method this checkout does not know."""
    try:
        import reasonbed.methods  # noqa: F401 - registers the built-in methods
        from reasonbed.methods.base import METHODS

        return bool(METHODS.get(method).needs_chains) if method in METHODS else None
    except (ImportError, AttributeError) as error:  # e.g. a method module whose optional dependency is missing
        log.info("cannot check whether %s needs chains: %s", method, error)
        return None


def _chains_uri(sweep_uri: str, location: str) -> str:
    """A trial's `chains` value as a URI: absolute paths and URLs as they are, others under the sweep."""
    if storage.is_remote(location) or Path(location).is_absolute():
        return location
    return storage.join(sweep_uri, location)


# What the report reads from a chains manifest's summary: the teacher's tokens, and the chains whose prompt
# named the label (label-conditioned: training leaves them out unless allow_label_conditioned).
CHAIN_COUNTS = ("completion_tokens", "prompt_tokens", "label_conditioned_candidates", "label_conditioned_kept")


def read_chain_tokens(chains_uri: str) -> dict[str, int]:
    """Token and label-conditioned chain counts (CHAIN_COUNTS) from `<chains>/manifest.json`'s summary;
    empty when absent."""
    try:
        fs, base = storage.filesystem(chains_uri)
        path = f"{base}/manifest.json"
        if not fs.exists(path):
            return {}
        with fs.open(path, "r") as handle:
            summary = json.load(handle).get("summary", {})
    except (OSError, ValueError) as error:
        log.warning("cannot read the chains manifest under %s: %s", chains_uri, error)
        return {}
    return {key: int(summary.get(key) or 0) for key in CHAIN_COUNTS}


def load_sweep(sweep_uri: str) -> SweepData:
    """Read sweep.json, the trial records and the chain token counts of a sweep folder."""
    sweep_uri = str(sweep_uri)
    sweep = read_sweep(sweep_uri)  # FileNotFoundError naming the folder when it is not a sweep
    records = load_records(sweep_uri)
    order = {name: i for i, name in enumerate(sweep.get("studies", []))}
    records.sort(key=lambda r: (order.get(r.study, len(order)), r.trial_id))
    configured = list((sweep.get("config") or {}).get("test_domains") or [])
    seen = [r.test_domain for r in records]
    domains = [d for d in configured if d in seen] + [d for d in dict.fromkeys(seen) if d not in configured]
    methods = list(dict.fromkeys(r.method for r in records))
    fs = storage.filesystem(sweep_uri)[0]
    needs = {method: _method_needs_chains(method) for method in methods}
    trial_chains: dict[str, str] = {}
    uses: dict[str, bool] = {}
    for record in records:
        with fs.open(f"{record.path}/trial.json", "r") as handle:
            location = str(json.load(handle).get("chains") or "")
        trial_chains[record.path] = _chains_uri(sweep_uri, location) if location else ""
        uses[record.path] = bool(location) and needs[record.method] is not False
    tokens = {loc: read_chain_tokens(loc) for loc in set(trial_chains.values()) if loc}
    zero_shot = sorted(load_zero_shot(sweep_uri), key=lambda r: (r.test_domain, r.seed))
    return SweepData(sweep_uri, sweep, records, domains, methods, trial_chains, uses, tokens, zero_shot)


def _sqlite_path(url: str) -> str | None:
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else None


def resolve_study_storage(sweep_uri: str, sweep: dict[str, Any], tmp_dir: str | Path) -> str | None:
    """The Optuna storage URL to read the sweep's studies from, or None when there is none.

    A non-SQLite URL (e.g. postgresql://) is used as it is; sweep.json keeps it with its password masked,
    so for such a URL the reader sets REASONBED_STUDY_STORAGE to the full one. A SQLite path that exists here is used
    as it is; otherwise the sweep folder's `optuna.db` (copied there by remote sweeps) is used,
    downloaded into `tmp_dir` when the sweep is on an object store.
    """
    url = str(sweep.get("study_storage") or "")
    if ":***@" in url:  # sweep.json never holds a database password: the reader supplies the full URL
        url = os.environ.get("REASONBED_STUDY_STORAGE", "")
    path = _sqlite_path(url) if url else None
    if url and path is None:
        return url
    if path and Path(path).is_file():
        return url
    fs, base = storage.filesystem(sweep_uri)
    copy = f"{base}/optuna.db"
    if not fs.exists(copy):
        log.warning("no Optuna storage: %s is not on this machine and %s has no optuna.db", url or "(none)",
                    sweep_uri)
        return None
    if not storage.is_remote(sweep_uri):
        return f"sqlite:///{Path(copy).resolve()}"
    local = Path(tmp_dir) / "optuna.db"
    local.parent.mkdir(parents=True, exist_ok=True)
    fs.get(copy, str(local))
    return f"sqlite:///{local.resolve()}"
