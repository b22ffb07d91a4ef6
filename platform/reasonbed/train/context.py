"""Where the worker loop runs: inside a Ray Train worker group, or in this process (the `local` backend).

The worker loop talks to its context only: rank and world size, the device, wrapping the model for
data parallelism, the checkpoint to resume from, reporting metrics with a checkpoint, and waiting until
reported checkpoints are registered (fault injection). `RayContext` is the one place the loop touches
Ray Train's worker API. `LocalContext` keeps checkpoints under `<storage>/checkpoint_step<N>` with the
same retention rule as the Ray backend (the best `keep` by val_acc, ties to the later one, plus always
the latest), so an in-process run resumes and selects like a Ray one. Inside a Ray Tune trial (a sweep with
`train.scale.backend=local`: the trial trains in its own process, no worker group) its reports also reach
Tune, so ASHA and the Optuna study see them as they see a Ray Train run's; a restored trial resumes from the
checkpoints under `storage`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCORE = "val_acc"  # what checkpoint retention ranks by: training-domain validation's own choice


def checkpoint_dir_name(step: int) -> str:
    return f"checkpoint_step{step:06d}"


class RayContext:
    """A Ray Train worker's view: ray.train's context, device, prepare_model, get_checkpoint and report."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()

    @property
    def device(self) -> Any:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: Any, strategy: str) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_model(model, parallel_strategy=strategy)

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[str | None]:
        import ray.train

        found = ray.train.get_checkpoint()
        if found is None:
            yield None
            return
        with found.as_directory() as directory:
            yield directory

    def report(self, metrics: dict[str, Any], directory: str | None, step: int) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name(step))

    def wait_for_checkpoints(self) -> None:
        import ray.train

        ray.train.get_all_reported_checkpoints()


class LocalContext:
    """One worker in this process; checkpoints and reports under `storage`."""

    rank, world = 0, 1

    def __init__(self, storage: str | Path, keep: int) -> None:
        self.storage, self.keep = Path(storage), keep
        self.storage.mkdir(parents=True, exist_ok=True)

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare_model(self, model: Any, strategy: str) -> Any:
        return model.to(self.device)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return sorted(path for path in self.storage.glob("checkpoint_step*") if (path / "state.json").is_file())

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[str | None]:
        found = self.checkpoints()
        yield str(found[-1]) if found else None

    def report(self, metrics: dict[str, Any], directory: str | None, step: int) -> None:
        if directory is None:
            return
        target = self.storage / checkpoint_dir_name(step)
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(directory, staging)
        (staging / "metrics.json").write_text(json.dumps(metrics, default=float))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # a checkpoint directory with state.json is complete
        self._prune(latest=target)
        from reasonbed.ray_runtime import report_to_tune_trial

        report_to_tune_trial(metrics)

    def _prune(self, latest: Path) -> None:
        found = self.checkpoints()

        def score(path: Path) -> tuple[float, int]:
            value = json.loads((path / "metrics.json").read_text()).get(SCORE, float("-inf"))
            return float(value), found.index(path)  # ties: the later checkpoint ranks higher (as Ray Train)

        kept = set(sorted(found, key=score)[-self.keep:]) | {latest}
        for path in found:
            if path not in kept:
                shutil.rmtree(path, ignore_errors=True)

    def wait_for_checkpoints(self) -> None:
        """Checkpoints are written synchronously here."""
