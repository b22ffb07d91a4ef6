"""DomainBed model selection over trial records, and the results tables.

- `training_domain` (default, honest): per (method, test domain, seed) the report (any trial, any
  checkpoint) with the highest `val_acc` - the mean accuracy on the source domains' held-out parts;
  its `test_acc` is the result. The test domain never influences the choice.
- `oracle` (reported separately, labelled): the trial whose last checkpoint has the best
  `test_acc` - an upper bound that peeks at the test domain, as DomainBed's oracle does.
- `leave_one_domain_out` (DomainBed's leave-one-domain-out cross-validation): per (method, test
  domain, seed) the trial whose hyperparameters give the best mean accuracy on each source domain
  held out in turn (its extra runs with `val_domain`, swept with `lodo_selection=true`); its main
  run's last checkpoint gives the test accuracy. Trials without all those runs are not candidates;
  with none, the cell is "n/a", never a number computed some other way.

Tables: rows = methods, columns = test domains + Avg, cells = mean ± std over seeds; every row also
carries its cost (CPU/GPU-hours summed over all its trials).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reasonbed.tune.records import TrialRecord

SELECTIONS = ("training_domain", "oracle", "leave_one_domain_out")


@dataclass(frozen=True)
class Choice:
    method: str
    test_domain: str
    seed: int
    trial_id: str
    step: int
    val_acc: float  # the selection score: val_acc (training-domain), or the mean held-out accuracy (LODO)
    test_acc: float
    hparams: dict[str, Any]


def _groups(records: Sequence[TrialRecord]) -> dict[tuple[str, str, int], list[TrialRecord]]:
    groups: dict[tuple[str, str, int], list[TrialRecord]] = {}
    for record in records:
        if record.reports and record.status != "errored":
            groups.setdefault((record.method, record.test_domain, record.seed), []).append(record)
    return groups


def select(records: Sequence[TrialRecord], selection: str = "training_domain") -> dict[tuple, Choice | None]:
    """The chosen (trial, checkpoint) per (method, test domain, seed)."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; known: {', '.join(SELECTIONS)}")
    chosen: dict[tuple, Choice | None] = {}
    for key, group in sorted(_groups(records).items()):
        if selection == "leave_one_domain_out":
            scored = [(record.lodo_score, record.trial_id, record) for record in group
                      if record.lodo_score is not None and record.status == "completed"]
            if not scored:
                chosen[key] = None
                continue
            score, _, record = max(scored, key=lambda item: (item[0], item[1]))
            row = record.last
            chosen[key] = Choice(record.method, record.test_domain, record.seed, record.trial_id, int(row["step"]),
                                 float(score), float(row["test_acc"]), dict(record.hparams))
            continue
        if selection == "training_domain":
            candidates = [(row["val_acc"], -int(row["step"]), record.trial_id, record, row)
                          for record in group for row in record.reports]
        else:  # oracle: last checkpoint of each trial, by test accuracy
            candidates = [(record.last["test_acc"], 0, record.trial_id, record, record.last) for record in group]
        best = max(candidates, key=lambda item: (item[0], item[1], item[2]))
        record, row = best[3], best[4]
        chosen[key] = Choice(record.method, record.test_domain, record.seed, record.trial_id, int(row["step"]),
                             float(row["val_acc"]), float(row["test_acc"]), dict(record.hparams))
    return chosen


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    if not values:
        return float("nan"), float("nan"), 0
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0, len(values)


def results_table(records: Sequence[TrialRecord], domains: Sequence[str], selection: str = "training_domain"
                  ) -> list[dict[str, Any]]:
    """One row per method: per-domain (mean, std, n) of test accuracy over seeds, Avg, and cost."""
    choices = select(records, selection)
    methods = sorted({record.method for record in records})
    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method}
        per_seed: dict[int, list[float]] = {}
        for domain in domains:
            values = []
            for (m, d, seed), choice in choices.items():
                if m == method and d == domain and choice is not None:
                    values.append(choice.test_acc)
                    per_seed.setdefault(seed, []).append(choice.test_acc)
            row[domain] = _mean_std(values)
        complete = [statistics.fmean(v) for v in per_seed.values() if len(v) == len(domains)]
        row["Avg"] = _mean_std(complete)
        mine = [record for record in records if record.method == method]
        row["trials"] = len(mine)
        row["cpu_hours"] = sum(record.cpu_hours for record in mine)
        row["gpu_hours"] = sum(record.gpu_hours for record in mine)
        rows.append(row)
    return rows


def format_cell(cell: tuple[float, float, int]) -> str:
    mean, std, n = cell
    if not n:
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(rows: Sequence[dict[str, Any]], domains: Sequence[str], selection: str) -> str:
    title = {"training_domain": "Training-domain validation (model selection on source held-out data)",
             "oracle": "ORACLE (test-domain selection: an upper bound, not a valid result)",
             "leave_one_domain_out": "Leave-one-domain-out selection"}[selection]
    header = ["Method", *domains, "Avg", "Trials", "CPU-h", "GPU-h"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"], *(format_cell(row[d]) for d in domains), format_cell(row["Avg"]), str(row["trials"]),
                 f"{row['cpu_hours']:.3f}", f"{row['gpu_hours']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if selection == "leave_one_domain_out":
        lines += ["", "Chosen by the mean accuracy on each source domain held out in turn (extra runs with the "
                      "trial's hyperparameters); the test accuracy is the trial's main run at its last checkpoint. "
                      "n/a: no finished trial has those runs (sweep with `lodo_selection=true`)."]
    return "\n".join(lines)
