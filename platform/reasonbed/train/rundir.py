"""The run directory of a training run (every method, every stage) and the claim on its checkpoint storage.

`RunDir.open(cfg)` makes a run directory ready: a new one, or one that holds a run of the same config
(rerunning the same command resumes; a finished run returns its result without training again). A
different config is refused naming the keys that differ - in the run directory AND in the checkpoint
storage (`<storage_path>/<run name>`), where a `reasonbed-run.yaml` claims the location: two runs of
different configs never share checkpoints under one name, so no run silently resumes another's.

Layout: `config.yaml`, `metrics.jsonl` (every evaluation report, across worker restarts), `steps.jsonl`
(every step's metrics), `adapter/` (the final LoRA adapter), `selected.json` (the run's best report by
val_acc - training-domain validation within the run - and its checkpoint), `provenance.json`,
`replicas/` (per-rank diagnostics) and the `done` marker, written last.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reasonbed import storage
from reasonbed.config import ConfigError, config_differences, dump_yaml, read_yaml, to_dict
from reasonbed.train import checkpointing
from reasonbed.train.config import RESUMABLE_KEYS, TrainConfig

CLAIM = "reasonbed-run.yaml"
STEPS_FILE = "steps.jsonl"


@dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict[str, Any]]
    adapter: Path
    skipped_inputs: dict[str, Any] = field(default_factory=dict)  # data.on_corrupt=skip: count and first paths
    trained: bool = True  # False: the run had finished before this call (nothing trained or reported now)

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


def plain_metric(value: Any) -> bool:
    """A value metrics.jsonl keeps: a finite number, a string, a bool or None (not arrays or NaN)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (int, str, bool)) or value is None


def _refuse(where: str, differences: list[str]) -> ConfigError:
    shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
    return ConfigError(f"{where} holds a run with another config ({shown}): rerun with its config to resume it, "
                       f"or choose a new run_dir / name")


def _write_lines(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w") as handle:
        handle.writelines(json.dumps({k: v for k, v in row.items() if plain_metric(v)}, default=float) + "\n"
                          for row in rows)


class RunDir:
    """One run's directory and checkpoint storage."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.run_dir).resolve()
        self.resuming = False  # the storage claim was there already (set by `open`)

    @property
    def storage_root(self) -> str:
        """Where the run's checkpoints live: `<storage_path>/<run name>`; without a storage_path,
        `<run_dir>/ray/<run name>` (Ray) or `<run_dir>/checkpoints` (local)."""
        if self.cfg.storage_path:
            return storage.join(self.cfg.storage_path, self.cfg.run_name)
        if self.cfg.scale.backend == "local":
            return str(self.path / "checkpoints")
        return storage.join(str(self.path / "ray"), self.cfg.run_name)

    @classmethod
    def open(cls, cfg: TrainConfig) -> RunDir:
        run = cls(cfg)
        saved = run.path / "config.yaml"
        if saved.is_file():
            differences = config_differences(read_yaml(saved), cfg, RESUMABLE_KEYS)
            if differences:
                raise _refuse(f"run_dir {str(run.path)!r}", differences)
        run.resuming = run.claim_storage()
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.done:
            shutil.rmtree(run.path / "replicas", ignore_errors=True)  # per-run worker diagnostics, written afresh
        dump_yaml(cfg, saved)
        return run

    def claim_storage(self) -> bool:
        """Check or write the config claim in the checkpoint storage; True when the claim was there (a resume).

        A fresh claim over checkpoints already in storage is refused: they belong to a run of unknown
        config (a stage that restored them would silently return another run's result).
        """
        fs, root = storage.filesystem(self.storage_root)
        claim = f"{root}/{CLAIM}"
        if fs.exists(claim):
            with fs.open(claim, "r") as handle:
                differences = config_differences(yaml.safe_load(handle.read()) or {}, self.cfg, RESUMABLE_KEYS)
            if differences:
                raise _refuse(f"checkpoint storage {self.storage_root!r}", differences)
            return True
        if fs.exists(root) and fs.glob(f"{root}/checkpoint_*"):
            raise ConfigError(f"checkpoint storage {self.storage_root!r} holds checkpoints of a run that did not "
                              f"claim it (no {CLAIM}): give this run its own name or storage_path")
        fs.makedirs(root, exist_ok=True)
        fs.pipe(claim, yaml.safe_dump(to_dict(self.cfg), sort_keys=False).encode())
        return False

    @property
    def done(self) -> bool:
        return (self.path / "done").is_file()

    def result(self) -> TrainResult:
        """The result of a finished run, from its files."""
        lines = (self.path / "metrics.jsonl").read_text().splitlines()
        saved = self.path / "provenance.json"
        skipped = json.loads(saved.read_text()).get("skipped_inputs", {}) if saved.is_file() else {}
        return TrainResult(self.path, [json.loads(line) for line in lines if line.strip()], self.path / "adapter",
                           skipped)

    def finished_checkpoint(self, steps: int) -> str | None:
        """The last checkpoint in storage when it already completes `steps` (the driver stopped before `done`)."""
        fs, root = storage.filesystem(self.storage_root)
        found = sorted(path for path in fs.glob(f"{root}/checkpoint_step*") if fs.exists(f"{path}/state.json"))
        if not found:
            return None
        with fs.open(f"{found[-1]}/state.json", "r") as handle:
            step = int(json.load(handle).get("step", -1))
        if not (step >= max(steps, 1) or (steps == 0 and step == 0)):
            return None
        # a URI (fs.glob drops s3:// and gs://: a bare path would be read from the local disk)
        return storage.join(self.storage_root, found[-1].rstrip("/").rsplit("/", 1)[-1])

    def finish(self, checkpoint: str | Path, index: Sequence[dict[str, Any]],
               skipped: dict[str, Any] | None = None) -> TrainResult:
        """The run's files (`write_final`) from its final checkpoint: its reports, step history and adapter."""
        fs, path = storage.filesystem(str(checkpoint))
        local = self.path / ".final-checkpoint"
        shutil.rmtree(local, ignore_errors=True)
        fs.get(f"{path}/", str(local), recursive=True)
        state = json.loads((local / "state.json").read_text())
        result = self.write_final(list(state.get("reports", [])), local / checkpointing.ADAPTER_DIR, index, skipped,
                                  history=list(state.get("history", [])))
        shutil.rmtree(local, ignore_errors=True)
        return result

    def write_final(self, reports: Sequence[dict[str, Any]], adapter: Path, index: Sequence[dict[str, Any]],
                    skipped: dict[str, Any] | None = None,
                    history: Sequence[dict[str, Any]] | None = None) -> TrainResult:
        """Write a finished run's files: the final adapter (copied), metrics (and steps when given), the run's own
        training-domain validation choice (`selected.json`: the best val_acc, the later on ties), provenance (with
        the inputs skipped, see reasonbed.data.reader.ImageCheck.record) and, last, `done`."""
        from reasonbed.provenance import provenance

        final_adapter = self.path / "adapter"
        shutil.rmtree(final_adapter, ignore_errors=True)
        shutil.copytree(adapter, final_adapter)
        _write_lines(self.path / "metrics.jsonl", reports)
        if history is not None:
            _write_lines(self.path / STEPS_FILE, history)
        if reports:
            best = max(enumerate(reports), key=lambda item: (float(item[1].get("val_acc", 0.0)), item[0]))[1]
            keep = ("step", "val_acc", "test_acc", "test_out_acc", "select_on", "checkpoint")
            stage = {k: best[k] for k in ("round", "global_step") if k in best}  # a multi-stage run's (SARR's)
            (self.path / "selected.json").write_text(json.dumps({**{k: best.get(k) for k in keep}, **stage}, indent=2))
        (self.path / "provenance.json").write_text(json.dumps({**provenance(self.cfg, index),
                                                               "skipped_inputs": skipped or {}}, indent=2))
        (self.path / "done").write_text(json.dumps({k: v for k, v in (reports[-1] if reports else {}).items()
                                                     if plain_metric(v)}, default=float))
        return TrainResult(self.path, [{k: v for k, v in row.items() if plain_metric(v)} for row in reports],
                           final_adapter, skipped or {})
