"""Leave-one-domain-out splits with DomainBed's seeded in/out holdout per source domain.

For test domain T, every other domain is a source; each domain's images - the test domain's too, as
DomainBed splits every environment - are ordered by a seeded hash of their stable id and the first
round(n * holdout_fraction) form its `out` part, the rest its `in` part. A source's in part is
trained on and its out part validates (training-domain validation); the test domain's in part is
what results report and its out part is what the oracle selects on. The order depends only on the
seed and the ids, so splits are identical across runs, machines and storage locations. `LodoSplit`
checks on construction that no test-domain row reaches training or validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reasonbed.data.specs import DatasetError, DatasetSpec


class LeakageError(AssertionError):
    """A test-domain row reached training or validation."""


def _rank(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def holdout(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split ids of one domain into (in, out) with exactly round(len * fraction) ids out."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"holdout_fraction must be in [0, 1), got {fraction!r}")
    ordered = sorted(ids, key=lambda image_id: _rank(seed, image_id))
    n_out = int(round(len(ordered) * fraction))
    return sorted(ordered[n_out:]), sorted(ordered[:n_out])


@dataclass(frozen=True)
class LodoSplit:
    """Ids per part: `train` (sources' in), `val` (sources' out), `test` (the test domain, all of it),
    `test_in` / `test_out` (its in and out parts)."""

    test_domain: str
    source_domains: tuple[str, ...]
    train: Mapping[str, tuple[str, ...]]
    val: Mapping[str, tuple[str, ...]]
    test: tuple[str, ...]
    holdout_fraction: float
    seed: int
    test_in: tuple[str, ...] = ()
    test_out: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        test_ids = set(self.test)
        if self.test_domain in self.train or self.test_domain in self.val:
            raise LeakageError(f"test domain {self.test_domain!r} is listed as a source domain")
        for part_name, part in (("train", self.train), ("val", self.val)):
            for domain, ids in part.items():
                leaked = test_ids.intersection(ids)
                if leaked:
                    raise LeakageError(
                        f"{len(leaked)} test-domain ({self.test_domain}) row(s) in {part_name} of {domain}: "
                        f"{sorted(leaked)[:3]}"
                    )

    @property
    def train_ids(self) -> set[str]:
        return {image_id for ids in self.train.values() for image_id in ids}

    @property
    def val_ids(self) -> set[str]:
        return {image_id for ids in self.val.values() for image_id in ids}

    def role_and_part(self) -> dict[str, tuple[str, str]]:
        """image id -> (role, DomainBed part): ("source" | "test", "in" | "out")."""
        found = {image_id: ("test", "in") for image_id in self.test_in}
        found.update({image_id: ("test", "out") for image_id in self.test_out})
        found.update({image_id: ("source", "out") for image_id in self.val_ids})
        found.update({image_id: ("source", "in") for image_id in self.train_ids})
        return found

    def summary(self) -> dict[str, Any]:
        return {
            "test_domain": self.test_domain, "holdout_fraction": self.holdout_fraction, "seed": self.seed,
            "train": {domain: len(ids) for domain, ids in self.train.items()},
            "val": {domain: len(ids) for domain, ids in self.val.items()}, "test": len(self.test),
            "test_in": len(self.test_in), "test_out": len(self.test_out),
        }


def lodo_split(spec: DatasetSpec, index: Iterable[Mapping[str, Any]], test_domain: str,
               holdout_fraction: float = 0.2, seed: int = 0) -> LodoSplit:
    """The split for one test domain from index rows (id, domain, ...)."""
    spec.check_domain(test_domain)
    by_domain: dict[str, list[str]] = {}
    for row in index:
        by_domain.setdefault(str(row["domain"]), []).append(str(row["id"]))
    if test_domain not in by_domain:
        raise DatasetError(f"dataset {spec.name!r}: test domain {test_domain!r} has no rows in the data read")
    train, val = {}, {}
    sources = tuple(domain for domain in spec.domains if domain != test_domain and domain in by_domain)
    if not sources:
        raise DatasetError(f"dataset {spec.name!r}: no source domain left besides test domain {test_domain!r}")
    for domain in sources:
        domain_in, domain_out = holdout(by_domain[domain], holdout_fraction, seed)
        train[domain], val[domain] = tuple(domain_in), tuple(domain_out)
    test = tuple(sorted(by_domain[test_domain]))
    test_in, test_out = holdout(by_domain[test_domain], holdout_fraction, seed)
    return LodoSplit(test_domain, sources, train, val, test, holdout_fraction, seed, tuple(test_in), tuple(test_out))


def all_lodo_splits(spec: DatasetSpec, index: Sequence[Mapping[str, Any]], holdout_fraction: float = 0.2,
                    seed: int = 0) -> dict[str, LodoSplit]:
    """One split per domain of the spec present in `index`."""
    present = {str(row["domain"]) for row in index}
    return {domain: lodo_split(spec, index, domain, holdout_fraction, seed)
            for domain in spec.domains if domain in present}
