"""Which checkpoint to export: a training run's own choice, or the model a sweep's selection picked.

`choose(source, ...)` reads a training run directory (its `selected.json`: the best report by val_acc,
training-domain validation within the run, and that report's checkpoint URI) or a sweep folder (every
trial record, `reasonbed.tune.selection.select` with the asked selection method, narrowed to one
(method, test domain, trial seed) by the filters), and returns a `Chosen`: the checkpoint's URI, the
whole evaluation report it was chosen on, the run's config and provenance. Errors name the source and
what is available.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonbed import storage
from reasonbed.config import ConfigError


@dataclass
class Chosen:
    """The checkpoint an export writes, with what it was chosen on and how it was trained."""

    checkpoint: str  # URI of the checkpoint directory (holds adapter/)
    report: dict[str, Any]  # the evaluation report it was chosen on (val_acc, test_acc, acc/<prompt>/<domain>/<part>)
    train_config: dict[str, Any]  # the run's TrainConfig, as saved
    provenance: dict[str, Any]  # code version, packages, data manifest hash
    selection: str  # "run" (the run's own best val_acc) or a sweep selection method
    source: str  # the run directory or sweep folder
    label: str  # e.g. "direct / photo / seed 0 / trial 1a2b3c"
    hparams: dict[str, Any] = field(default_factory=dict)  # the trial's sampled hyperparameters (sweeps)
    fallback_adapter: str = ""  # the run's final adapter/ (used when the checkpoint is the last and was pruned)


def _read_yaml(fs: Any, path: str) -> dict[str, Any]:
    import yaml

    with fs.open(path, "r") as handle:
        return yaml.safe_load(handle.read()) or {}


def from_run(run_dir: str) -> Chosen:
    """A finished training run's choice: selected.json's step and checkpoint, the report of that step."""
    fs, base = storage.filesystem(run_dir)
    if not fs.exists(f"{base}/done"):
        raise ConfigError(f"{run_dir!r}: the run is not finished (no `done` marker); export a finished run")
    if not fs.exists(f"{base}/selected.json"):
        raise ConfigError(f"{run_dir!r}: no selected.json (a run with no evaluation report has nothing to export)")
    selected = storage.read_json(fs, f"{base}/selected.json")
    with fs.open(f"{base}/metrics.jsonl", "r") as handle:
        reports = [json.loads(line) for line in handle if line.strip()]
    report = next((row for row in reports if _stage_step(row) == _stage_step(selected)), dict(selected))
    if not selected.get("checkpoint"):
        raise ConfigError(f"{run_dir!r}: selected.json names no checkpoint (a run from before checkpoints were "
                          f"recorded); export its final adapter with `reasonbed export` on a newer run")
    config = _read_yaml(fs, f"{base}/config.yaml")
    provenance = storage.read_json(fs, f"{base}/provenance.json") if fs.exists(f"{base}/provenance.json") else {}
    last = _stage_step(reports[-1]) if reports else None
    stage = f"round {selected['round']} " if selected.get("round") is not None else ""
    return Chosen(str(selected["checkpoint"]), report, config, provenance, "run", run_dir,
                  f"{config.get('method')} / {config.get('test_domain')} / seed {config.get('seed')} / {stage}step "
                  f"{selected.get('step')}", fallback_adapter=storage.join(run_dir, "adapter")
                  if _stage_step(selected) == last else "")


def _stage_step(report: dict[str, Any]) -> tuple[Any, Any]:
    """Which report: its step, and its stage's round in a multi-stage run (SARR counts steps per round)."""
    return report.get("round"), report.get("step")


def from_sweep(sweep: str, selection: str, method: str = "", test_domain: str = "", seed: int | None = None
               ) -> Chosen:
    """The (trial, checkpoint) `selection` chose for the one (method, test domain, seed) the filters leave."""
    from reasonbed.tune.records import load_records
    from reasonbed.tune.selection import SELECTIONS, select

    if selection not in SELECTIONS:
        raise ConfigError(f"selection: value {selection!r} is not allowed; allowed: {', '.join(SELECTIONS)}")
    records = load_records(sweep)
    if not records:
        raise ConfigError(f"sweep {sweep!r} has no trial records yet")
    choices = select(records, selection)
    keys = [key for key in choices if (not method or key[0] == method) and (not test_domain or key[1] == test_domain)
            and (seed is None or key[2] == seed)]
    if len(keys) != 1:
        shown = ", ".join(f"--method {m} --test-domain {d} --seed {s}" for m, d, s in sorted(choices))
        what = "matches none" if not keys else f"matches {len(keys)}"
        raise ConfigError(f"sweep {sweep!r}: the filters (method {method or 'any'}, test domain {test_domain or 'any'}, "
                          f"seed {'any' if seed is None else seed}) {what} of its (method, test domain, seed) "
                          f"groups; choose one of: {shown}")
    choice = choices[keys[0]]
    if choice is None:
        raise ConfigError(f"sweep {sweep!r}: selection {selection!r} chose nothing for {keys[0]} (no candidate "
                          f"report; leave_one_domain_out needs a sweep run with lodo_selection=true)")
    record = next(r for r in records if r.trial_id == choice.trial_id)
    checkpoint = choice.report.get("checkpoint")
    if not checkpoint:
        raise ConfigError(f"sweep {sweep!r}: trial {choice.trial_id}'s report at step {choice.step} names no "
                          f"checkpoint (a sweep from before reports carried one)")
    return Chosen(str(checkpoint), dict(choice.report), dict(record.provenance.get("config") or {}),
                  dict(record.provenance), selection, sweep,
                  f"{choice.method} / {choice.test_domain} / seed {choice.seed} / trial {choice.trial_id} / step "
                  f"{choice.step}", hparams=dict(choice.hparams))


def choose(source: str, selection: str = "training_domain", method: str = "", test_domain: str = "",
           seed: int | None = None) -> Chosen:
    """A sweep folder (sweep.json) or a training run directory (selected.json)."""
    fs, base = storage.filesystem(source)
    if not fs.exists(base):
        raise ConfigError(f"{source!r} does not exist (a training run directory or a sweep folder)")
    if fs.exists(f"{base}/sweep.json"):
        return from_sweep(source, selection, method, test_domain, seed)
    if fs.exists(f"{base}/config.yaml"):
        filters: Sequence[tuple[str, Any]] = (("--method", method), ("--test-domain", test_domain))
        given = [flag for flag, value in filters if value] + (["--seed"] if seed is not None else [])
        if given or selection != "training_domain":
            raise ConfigError(f"{source!r} is one training run: {', '.join(given) or '--selection'} choose among a "
                              f"sweep's runs (a run exports its own choice, selected.json)")
        return from_run(source)
    raise ConfigError(f"{source!r} is neither a sweep folder (sweep.json) nor a training run directory "
                      f"(config.yaml, selected.json)")
