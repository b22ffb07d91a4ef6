"""DomainBed model selection over trial records, and the statistics of the results tables.

Selection, per (method, test domain, trial seed), as `domainbed/model_selection.py`:

- `training_domain` (IIDAccuracySelectionMethod, the honest default): the report - any trial, any
  checkpoint - with the highest `val_acc` (mean accuracy on the source domains' out parts); the
  result is its `test_acc`, the test domain's *in* part. The test domain never influences the choice.
- `oracle` (OracleSelectionMethod, reported separately and labelled): each trial's LAST report (no
  early stopping), the trial with the best `test_out_acc` (the test domain's *out* part); the result
  is that report's `test_acc` (the *in* part), so it never picks and reports on the same images.
  Reports without `test_out_acc` (sweeps from before the test domain was split) are no candidates.
- `leave_one_domain_out` (LeaveOneOutSelectionMethod): the trial whose hyperparameters give the best
  mean accuracy on each source domain held out in turn (its extra runs with `val_domain`, swept with
  `lodo_selection=true`); the result is its main run's last `test_acc` (in part). Only trials that
  trained to their end and have every held-out run are candidates; with none the cell is missing.

Ties. An equal score goes first to the LATER checkpoint (larger step): within a trial, Ray Train's
checkpoint manager (`CheckpointConfig(checkpoint_score_attribute="val_acc")`) ranks the later of two
equally scored checkpoints higher and always keeps the latest, so the chosen checkpoint is one Ray
kept (DomainBed keeps no checkpoints and takes the first). Then to the later draw (the larger
`draw`, the Optuna trial number a trial records; then the larger trial id, for records without it),
as DomainBed's `sorted(..., key=val_acc)[::-1]` hands ties to the largest `hparams_seed`.

Errored trials stay: their valid reports (numeric val_acc and test_acc) are candidates like any
other; `errored_summary` says how many trials errored and how many of them were candidates.

Statistics, as `domainbed/scripts/collect_results.py`: a cell is the mean over trial seeds of the
selected test accuracy ± its standard error, `format_mean`'s `np.std(data / sqrt(n))` - the
population standard deviation (ddof 0) divided by sqrt(n); a single seed shows `n=1` instead of a
meaningless `± 0.0`; a cell without results shows `X`. The Avg column is
`print_results_tables`'s: the plain mean of the per-domain means, no ±, and `X` when any test
domain has no result.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonbed.tune.records import TrialRecord

SELECTIONS = ("training_domain", "oracle", "leave_one_domain_out")
TITLES = {"training_domain": "Training-domain validation (model selection on the source domains' out parts)",
          "oracle": "ORACLE (test-domain out-part selection: an upper bound, not a valid result)",
          "leave_one_domain_out": "Leave-one-domain-out selection"}
SCORES = {"training_domain": "val_acc", "oracle": "test_out_acc", "leave_one_domain_out": "held-out mean"}
MISSING = "X"  # DomainBed's mark for a cell (or an Avg) without a result


@dataclass(frozen=True)
class Choice:
    """The (trial, checkpoint) a selection chose for one (method, test domain, trial seed)."""

    method: str
    test_domain: str
    seed: int
    trial_id: str
    step: int
    score: float  # what the selection maximised: val_acc, test_out_acc (oracle) or the held-out mean (LODO)
    val_acc: float  # the chosen report's val_acc (source out parts)
    test_acc: float  # the chosen report's test_acc (test domain, in part): the result
    hparams: dict[str, Any]
    select_on: str = ""  # the prompt val_acc / test_acc come from ("direct" or "reasoning")
    errored: bool = False  # the trial errored later (its valid reports stayed candidates)
    report: dict[str, Any] = field(default_factory=dict, compare=False)  # the whole chosen report


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _choice(record: TrialRecord, row: Mapping[str, Any], score: float) -> Choice:
    return Choice(record.method, record.test_domain, record.seed, record.trial_id, int(row.get("step", 0)),
                  float(score), float(row["val_acc"]), float(row["test_acc"]), dict(record.hparams),
                  str(row.get("select_on") or ""), record.status == "errored", dict(row))


def _groups(records: Sequence[TrialRecord]) -> dict[tuple[str, str, int], list[TrialRecord]]:
    groups: dict[tuple[str, str, int], list[TrialRecord]] = {}
    for record in records:
        groups.setdefault((record.method, record.test_domain, record.seed), []).append(record)
    return groups


def _order(record: TrialRecord) -> tuple[int, str]:
    """A trial's place among its study's trials: its draw number, then its id."""
    return (-1 if record.draw is None else record.draw, record.trial_id)


def _candidates(group: Sequence[TrialRecord], selection: str) -> list[tuple[tuple, TrialRecord, Mapping, float]]:
    """(tie-breaking key, record, report, score) of every candidate of one group."""
    found = []
    for record in group:
        if selection == "training_domain":
            found += [((float(row["val_acc"]), int(row.get("step", 0)), _order(record)), record, row,
                       float(row["val_acc"])) for row in record.reports]
        elif selection == "oracle":
            last = record.last
            if last and _numeric(last.get("test_out_acc")):
                found.append(((float(last["test_out_acc"]), _order(record)), record, last, float(last["test_out_acc"])))
        elif record.status == "completed" and record.lodo_score is not None and record.reports:
            found.append(((record.lodo_score, _order(record)), record, record.last, record.lodo_score))
    return found


def select(records: Sequence[TrialRecord], selection: str = "training_domain") -> dict[tuple, Choice | None]:
    """The chosen (trial, checkpoint) per (method, test domain, trial seed); None where nothing qualifies."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; known: {', '.join(SELECTIONS)}")
    chosen: dict[tuple, Choice | None] = {}
    for key, group in sorted(_groups(records).items()):
        candidates = _candidates(group, selection)
        if not candidates:
            chosen[key] = None
            continue
        _, record, row, score = max(candidates, key=lambda item: item[0])
        chosen[key] = _choice(record, row, score)
    return chosen


def errored_summary(records: Sequence[TrialRecord], chosen: Mapping[tuple, Choice | None]) -> dict[str, int]:
    """How many trials errored, how many of those had valid reports (candidates), how many cells they won."""
    errored = [record for record in records if record.status == "errored"]
    return {"errored": len(errored), "errored_candidates": sum(1 for record in errored if record.reports),
            "chosen_from_errored": sum(1 for choice in chosen.values() if choice is not None and choice.errored)}


@dataclass(frozen=True)
class Stat:
    """Test accuracies (fractions), one per trial seed, of one table cell."""

    values: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def se(self) -> float:
        """DomainBed's standard error: np.std(data / sqrt(n)) = population std / sqrt(n)."""
        return statistics.pstdev(self.values) / math.sqrt(self.n) if self.values else math.nan


def format_mean(stat: Stat, latex: bool = False) -> str:
    """A cell in percent as collect_results.format_mean writes it; `n=1` for one seed; X for none."""
    if not stat.n:
        return MISSING
    if stat.n == 1:
        return f"{100 * stat.mean:.1f} (n=1)"
    plus_minus = "$\\pm$" if latex else "±"
    return f"{100 * stat.mean:.1f} {plus_minus} {100 * stat.se:.1f}"


@dataclass
class Row:
    """One row of a results table: a method (or the zero-shot base model) over the test domains."""

    method: str
    cells: dict[str, Stat]  # test domain -> accuracies over trial seeds
    trials: int  # trials behind the row (all statuses)
    cpu_hours: float  # CPU-hours of all those trials (time x resources)
    gpu_hours: float  # GPU-hours of all those trials
    select_on: str = ""  # the prompt(s) the row's numbers come from
    zero_shot: bool = False  # the base model's row: no training, no selection

    @property
    def avg(self) -> float | None:
        """DomainBed's Avg: the mean of the per-domain means; None (shown as X) when a domain has no result."""
        if not self.cells or any(not stat.n for stat in self.cells.values()):
            return None
        return statistics.fmean(stat.mean for stat in self.cells.values())


def format_avg(row: Row) -> str:
    return MISSING if row.avg is None else f"{100 * row.avg:.1f}"


def _prompts(reports: Sequence[Mapping[str, Any]]) -> str:
    return "/".join(sorted({str(report.get("select_on")) for report in reports if report.get("select_on")}))


def _row(method: str, domains: Sequence[str], picks: Sequence[tuple[str, Mapping[str, Any]]],
         records: Sequence[TrialRecord], zero_shot: bool = False) -> Row:
    """picks: (test domain, chosen report) per (test domain, trial seed)."""
    cells = {domain: Stat(tuple(float(row["test_acc"]) for d, row in picks if d == domain)) for domain in domains}
    return Row(method, cells, 0 if zero_shot else len(records), sum(r.cpu_hours for r in records),
               sum(r.gpu_hours for r in records), _prompts([row for _, row in picks]), zero_shot)


def results_table(records: Sequence[TrialRecord], domains: Sequence[str], selection: str = "training_domain",
                  zero_shot: Sequence[TrialRecord] = ()) -> list[Row]:
    """One row per method (the zero-shot row first when given): per test domain the selected test_acc over
    trial seeds, with the cost of all the method's trials."""
    choices = select(records, selection)
    rows = []
    for method in sorted({record.method for record in records}):
        picks = [(c.test_domain, c.report) for (m, _, _), c in choices.items() if m == method and c is not None]
        rows.append(_row(method, domains, picks, [r for r in records if r.method == method]))
    if not zero_shot:
        return rows
    # the base model on each prompt the methods' numbers come from (a reasoning method is compared with the
    # base model's reasoning-prompt accuracy), when its evaluation has that prompt's accuracy
    baselines = []
    prompts = sorted({prompt for row in rows for prompt in row.select_on.split("/") if prompt}) or [""]
    for prompt in prompts:
        picks = [(r.test_domain, _on_prompt(r.last, prompt)) for r in zero_shot if r.reports]
        row = _row(zero_shot[0].method, domains, picks, zero_shot, zero_shot=True)
        if row.select_on not in {baseline.select_on for baseline in baselines}:
            baselines.append(row)
    return [*baselines, *rows]


def _on_prompt(report: Mapping[str, Any], prompt: str) -> Mapping[str, Any]:
    """A zero-shot report read on `prompt` (test_acc_<prompt>), or as it is when it lacks that prompt."""
    if not prompt or f"test_acc_{prompt}" not in report:
        return report
    return {**report, "test_acc": report[f"test_acc_{prompt}"], "select_on": prompt}
