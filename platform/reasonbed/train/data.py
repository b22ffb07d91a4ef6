"""Training data on the workers: a deterministic example stream and an image store.

The training examples form an endless stream of seeded per-epoch permutations; optimizer step s
takes stream positions [s*B, (s+1)*B), and each worker takes its contiguous share of them. So the
data position of a checkpoint is just its step, and a resumed run sees exactly the examples it
would have seen. An epoch's permutation is computed once and cached, so a step costs O(B), not a
reshuffle of the whole epoch per example. Images are read by path from the dataset root (local or
s3://) and cached.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from reasonbed import storage


@lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The seeded permutation of n examples for one epoch (cached: a step needs at most two epochs)."""
    order = list(range(n))
    random.Random(f"{seed}/epoch/{epoch}").shuffle(order)
    return tuple(order)


def step_indices(n: int, batch_size: int, step: int, seed: int) -> list[tuple[int, int]]:
    """(example index, epoch) for every position of global batch `step`."""
    picked = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n)
        picked.append((epoch_order(n, seed, epoch)[offset], epoch))
    return picked


def worker_share(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    per = len(items) // world
    return list(items[rank * per:(rank + 1) * per])


class ImageStore:
    """Image bytes by path relative to the dataset root, cached in memory."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.fs, self.base = storage.filesystem(root, storage_options)
        self.read = lru_cache(maxsize=100_000)(self._read)

    def _read(self, path: str) -> bytes:
        with self.fs.open(f"{self.base}/{path}", "rb") as handle:
            return handle.read()
