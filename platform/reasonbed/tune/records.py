"""Trial records gathered from a sweep folder (local or s3://): what selection and reports read.

Each trial directory holds Tune's `result.json` (one line per evaluation report: val_acc - the source
domains' out parts -, test_acc - the test domain's in part -, test_out_acc - its out part -,
select_on, per-prompt and per-domain accuracies, step, total_steps, examples_seen, time_total_s, ...),
and the trial's own `trial.json` (method, test domain, trial seed and the seeds it sets, hyperparameters,
resources), `provenance.json` and, with leave-one-domain-out selection runs, `lodo.json`
(reasonbed.tune.trial.lodo_runs). A record's status is `completed` (reached its last step), `stopped`
(ASHA stopped it early) or `errored`; an errored trial keeps its valid reports. `load_zero_shot` reads
the zero-shot evaluations (reasonbed.tune.zero_shot) as records of their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reasonbed import storage


@dataclass
class TrialRecord:
    study: str
    method: str
    test_domain: str
    seed: int
    trial_id: str
    hparams: dict[str, Any]
    reports: list[dict[str, Any]]
    status: str
    provenance: dict[str, Any] = field(default_factory=dict)
    cpus: float = 0.0
    gpus: float = 0.0
    path: str = ""
    lodo: dict[str, Any] = field(default_factory=dict)  # lodo.json: sources, heldout_acc per source, seconds
    seeds: dict[str, int] = field(default_factory=dict)  # trial_seed, split_seed, sampler_seed, train_seed
    draw: int | None = None  # the draw's place in its study (Optuna trial number, 0 = the defaults); None if unknown

    @property
    def seconds(self) -> float:
        """Training time: the main run (Tune's time_total_s, else the run's own seconds) and its LODO runs."""
        last = self.last
        main = float(last.get("time_total_s", last.get("seconds", 0.0)))
        return main + float(self.lodo.get("seconds", 0.0))

    @property
    def lodo_score(self) -> float | None:
        """Mean held-out accuracy over every source domain left out in turn; None unless all of them ran."""
        sources, accuracies = self.lodo.get("sources") or [], self.lodo.get("heldout_acc") or {}
        if not sources or set(accuracies) != set(sources):
            return None
        return sum(float(accuracies[domain]) for domain in sources) / len(sources)

    @property
    def cpu_hours(self) -> float:
        return self.seconds * self.cpus / 3600.0

    @property
    def gpu_hours(self) -> float:
        return self.seconds * self.gpus / 3600.0

    @property
    def last(self) -> dict[str, Any]:
        return self.reports[-1] if self.reports else {}


def _read_lines(fs: Any, path: str) -> list[dict[str, Any]]:
    with fs.open(path, "r") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def valid_reports(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation reports among Tune's result lines: those with a numeric val_acc and test_acc."""
    return [row for row in rows if _number(row.get("val_acc")) and _number(row.get("test_acc"))]


def load_records(sweep_uri: str, storage_options: Mapping[str, Any] | None = None) -> list[TrialRecord]:
    """Every trial of every study under the sweep folder."""
    fs, base = storage.filesystem(sweep_uri, storage_options)
    studies = set(read_sweep(sweep_uri, storage_options).get("studies", []))
    records = []
    for trial_json in sorted(fs.glob(f"{base}/*/trial_*/trial.json")):
        directory = trial_json.rsplit("/", 1)[0]
        if directory.rsplit("/", 2)[-2] not in studies:  # e.g. a partial run kept aside in .interrupted/
            continue
        meta = storage.read_json(fs, trial_json)
        result_path = f"{directory}/result.json"
        reports = valid_reports(_read_lines(fs, result_path) if fs.exists(result_path) else [])
        errored = fs.exists(f"{directory}/error.txt") or fs.exists(f"{directory}/error.pkl")
        last = reports[-1] if reports else {}
        if errored:
            status = "errored"
        elif last and int(last.get("step", 0)) >= int(last.get("total_steps", 1)):
            status = "completed"
        else:
            status = "stopped"
        provenance_path = f"{directory}/provenance.json"
        lodo_path = f"{directory}/lodo.json"
        records.append(TrialRecord(
            study=meta["study"], method=meta["method"], test_domain=meta["test_domain"], seed=int(meta["seed"]),
            trial_id=meta["trial_id"], hparams=meta.get("hparams", {}), reports=reports, status=status,
            provenance=storage.read_json(fs, provenance_path) if fs.exists(provenance_path) else {},
            cpus=float(meta.get("cpus", 0)), gpus=float(meta.get("gpus", 0)), path=directory,
            lodo=storage.read_json(fs, lodo_path) if fs.exists(lodo_path) else {}, seeds=dict(meta.get("seeds") or {}),
            draw=None if meta.get("draw") is None else int(meta["draw"]),
        ))
    return records


ZERO_SHOT_ROW = "zero-shot (base model)"  # the method name of zero-shot records in tables


def load_zero_shot(sweep_uri: str, storage_options: Mapping[str, Any] | None = None) -> list[TrialRecord]:
    """The zero-shot evaluations of a sweep (<sweep>/zero_shot/*/zero_shot.json), one record each."""
    fs, base = storage.filesystem(sweep_uri, storage_options)
    records = []
    for path in sorted(fs.glob(f"{base}/zero_shot/*/zero_shot.json")):
        data = storage.read_json(fs, path)
        name = path.rsplit("/", 2)[-2]
        reports = valid_reports(data.get("reports") or [])
        if reports and "seconds" in data:  # the run's wall time is its cost, as Tune's time_total_s for trials
            reports[-1] = {**reports[-1], "time_total_s": float(data["seconds"])}
        records.append(TrialRecord(
            study="zero_shot", method=ZERO_SHOT_ROW, test_domain=data["test_domain"], seed=int(data["seed"]),
            trial_id=f"zero_shot-{name}", hparams={}, reports=reports,
            status="completed", provenance=data.get("provenance") or {}, cpus=float(data.get("cpus", 0)),
            gpus=float(data.get("gpus", 0)), path=path.rsplit("/", 1)[0], seeds=dict(data.get("seeds") or {})))
    return records


def read_sweep(sweep_uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sweep's own description (sweep.json)."""
    fs, base = storage.filesystem(sweep_uri, storage_options)
    if not fs.exists(f"{base}/sweep.json"):
        raise FileNotFoundError(f"{sweep_uri!r} is not a sweep folder (no sweep.json)")
    return storage.read_json(fs, f"{base}/sweep.json")
