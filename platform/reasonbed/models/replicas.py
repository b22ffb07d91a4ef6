"""Data parallelism for the tiny models' pretraining: one step in several processes on one machine.

A tiny model's step is too small for two torch threads to help much (~20% on 2 idle cores), but half a batch
takes a little over half a whole one's time (53% in the vision stage, 60% in the image-text stage, one thread).
So a build runs `world` replicas, each a process with one thread: every replica draws the same batch, computes
its contiguous share of it, and the replicas sum their gradients with gloo over 127.0.0.1 (one all-reduce per
step). The math is the one-process math: each replica divides its share's summed loss by the whole batch's count
(`Replicas.total`), so the summed gradient is the whole batch's gradient up to the order of float additions,
and every replica then takes the same clipped optimizer step on the same weights (`Replicas.check_identical`
checks at the end that they stayed equal). Work that is not per example (the optimizer step, each replica's
interpreter) is repeated, so a build uses more CPU than in one process (docs/benchmarks.md).

A build may also replay the replicas in one process (`Replicas.replayed`): it computes every rank's share in
turn and lets autograd add their gradients, the same float additions the all-reduce makes, so it writes the same
bytes as `world` processes; without the repeated work it uses less CPU, and more wall time (for a machine whose
cores are busy anyway, e.g. the test suite's build).

`spawn_replicas` starts the helper replicas (ranks 1..world-1, fresh interpreters running `target`) and joins
this process as rank 0; a helper that fails before joining is reported at once, one that fails later ends the
next all-reduce with an error, and leaving the context (also by an exception or Ctrl-C) ends the helpers.
"""

from __future__ import annotations

import contextlib
import datetime
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

JOIN_TIMEOUT_S = 600.0  # how long a replica waits for the others (a helper's start on a busy machine included)


class ReplicaError(RuntimeError):
    """A replica failed (exited, did not join, or ended with other weights than the others)."""


class Replicas:
    """This process's place among the replicas (`rank` of `world`) and their gloo group (None when alone or when
    this process replays all `world` of them: `replayed`)."""

    def __init__(self, rank: int = 0, world: int = 1, group: Any = None) -> None:
        self.rank, self.world, self.group = rank, world, group
        self.ranks = [rank]  # the ranks whose shares this process computes

    @classmethod
    def replayed(cls, world: int) -> Replicas:
        """All `world` replicas in this process, one share after the other (the module's doc)."""
        replicas = cls(0, world)
        replicas.ranks = list(range(world))
        return replicas

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous part of `items`: its shares, in rank order (all of `items` when it replays)."""
        return [item for part in self.shares(items) for item in part]

    def shares(self, items: Sequence[T]) -> list[list[T]]:
        """The contiguous share of `items` of each rank this process computes (the shares of all ranks, in rank
        order, are `items`)."""
        return [list(items[slice(*_bounds(rank, self.world, len(items)))]) for rank in self.ranks]

    def gather_rows(self, count: int, rows_of: Callable[[list[int]], Any]) -> Any:
        """A tensor of `count` rows, each made by one replica: this one makes the rows of its share of the
        indices 0..count-1 (`rows_of(indices)`: a tensor with one row per index), and all exchange theirs."""
        import torch

        mine = rows_of(self.share(range(count)))
        if self.group is None:
            return mine
        padded = torch.zeros((-(-count // self.world), *mine.shape[1:]), dtype=mine.dtype)  # allgather: equal sizes
        padded[:len(mine)] = mine
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self.group.allgather([parts], [padded]).wait()
        lengths = [end - start for start, end in (_bounds(rank, self.world, count) for rank in range(self.world))]
        return torch.cat([part[:length] for part, length in zip(parts, lengths, strict=True)])

    def total(self, value: Any) -> Any:
        """The sum over the replicas of the tensor `value` (a new tensor; `value` itself alone)."""
        summed = value.detach().clone()
        if self.group is not None:
            self.group.allreduce([summed]).wait()
        return summed

    def sum_gradients(self, parameters: Sequence[Any], loss: Any) -> float:
        """Replace each parameter's gradient by its sum over the replicas (one all-reduce, with the losses);
        returns the summed loss, the whole batch's loss when each share's loss was divided by the whole count."""
        if self.group is None:
            return float(loss.detach())
        import torch

        grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
        flat = torch.cat([*(grad.reshape(-1) for grad in grads), loss.detach().reshape(1).to(grads[0].dtype)])
        self.group.allreduce([flat]).wait()
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()
        return float(flat[-1])

    def check_identical(self, parameters: Sequence[Any]) -> None:
        """Raise unless every replica holds the same values of `parameters` (elementwise max == min)."""
        if self.group is None:
            return
        import torch
        import torch.distributed as dist

        flat = torch.cat([parameter.detach().reshape(-1) for parameter in parameters])
        high, low = flat.clone(), flat.clone()
        self.group.allreduce([high], _options(dist.ReduceOp.MAX)).wait()
        self.group.allreduce([low], _options(dist.ReduceOp.MIN)).wait()
        if not torch.equal(high, low):
            raise ReplicaError(f"pretraining: the {self.world} data-parallel replicas ended with different weights "
                               f"(largest difference {float((high - low).abs().max()):.3g})")


def _bounds(rank: int, world: int, count: int) -> tuple[int, int]:
    """The start and end of `rank`'s contiguous share of `count` items."""
    return rank * count // world, (rank + 1) * count // world


def _options(op: Any) -> Any:
    import torch.distributed as dist

    options = dist.AllreduceOptions()
    options.reduceOp = op
    return options


def _store(path: str, world: int) -> Any:
    import torch.distributed as dist

    return dist.FileStore(path, world)


def _group(store: Any, rank: int, world: int) -> Any:
    import torch.distributed as dist

    options = dist.ProcessGroupGloo._Options()
    options._timeout = datetime.timedelta(seconds=JOIN_TIMEOUT_S)
    options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
    return dist.ProcessGroupGloo(store, rank, world, options)


def join_replicas(store_path: str, rank: int, world: int) -> Replicas:
    """Join the replicas as `rank` (a helper's side of `spawn_replicas`): say so, then wait for the others."""
    store = _store(store_path, world)
    store.set(f"ready/{rank}", "1")
    return Replicas(rank, world, _group(store, rank, world))


@contextlib.contextmanager
def spawn_replicas(world: int, target: Callable[..., None], args: tuple[Any, ...]) -> Iterator[Replicas]:
    """Start `world - 1` helper processes running `target(store_path, rank, world, *args)` (which calls
    `join_replicas`) and join them as rank 0; `world` 1 starts none and yields a lone `Replicas`.

    A helper is a fresh interpreter (`python -m reasonbed.models.replicas`) that reads its call, pickled, from
    its stdin: unlike multiprocessing's spawn it does not re-import the caller's `__main__` (a script without a
    main guard, a Ray worker), and it inherits no threads, locks or Ray state.
    """
    if world == 1:
        yield Replicas()
        return
    with tempfile.TemporaryDirectory(prefix="reasonbed-replicas-") as folder:
        store_path = str(Path(folder) / "store")
        helpers = [_Helper(rank, pickle.dumps((target, store_path, rank, world, args))) for rank in range(1, world)]
        try:
            store = _store(store_path, world)
            _wait_until_ready(store, helpers)
            yield Replicas(0, world, _group(store, 0, world))
            for helper in helpers:
                helper.wait(JOIN_TIMEOUT_S)
        except Exception as error:
            failed = [helper for helper in helpers if helper.exitcode not in (None, 0)]
            if failed and not isinstance(error, ReplicaError):  # e.g. gloo's error when a helper's connection closed
                raise ReplicaError(f"pretraining: data-parallel {failed[0].name} failed (exit code "
                                   f"{failed[0].exitcode}): {error}") from error
            raise
        finally:
            for helper in helpers:
                helper.stop()
        for helper in helpers:
            if helper.exitcode != 0:
                raise ReplicaError(f"pretraining: {helper.name} exited with code {helper.exitcode}")


class _Helper:
    """One helper replica's process: started with its pickled call on stdin, its output on this process's."""

    def __init__(self, rank: int, call: bytes) -> None:
        self.name = f"replica {rank}"
        self.process = subprocess.Popen([sys.executable, "-m", "reasonbed.models.replicas"], stdin=subprocess.PIPE)
        assert self.process.stdin is not None
        try:
            with self.process.stdin:
                self.process.stdin.write(call)
        except BrokenPipeError:  # it died while starting: `_wait_until_ready` reports its exit code
            pass

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float) -> None:
        self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_until_ready(store: Any, helpers: Sequence[Any]) -> None:
    """Wait until every helper has said it is ready, failing at once when one exits first."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for rank, helper in enumerate(helpers, start=1):
        while True:
            try:
                store.wait([f"ready/{rank}"], datetime.timedelta(seconds=1))
                break
            except RuntimeError:  # not yet (the store's wait timed out)
                if helper.exitcode is not None:
                    raise ReplicaError(f"pretraining: {helper.name} exited with code {helper.exitcode} "
                                       f"before it joined") from None
                if time.monotonic() > deadline:
                    raise ReplicaError(f"pretraining: {helper.name} did not join within "
                                       f"{JOIN_TIMEOUT_S:.0f} s") from None


def _run_helper() -> None:
    """A helper replica's process: read the pickled call from stdin (written by `spawn_replicas`) and run it."""
    target, store_path, rank, world, args = pickle.load(sys.stdin.buffer)
    target(store_path, rank, world, *args)


if __name__ == "__main__":
    _run_helper()
