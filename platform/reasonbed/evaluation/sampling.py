"""In-context examples per condition: class-balanced, seeded, never the query image itself.

For a query image of domain d, k examples are drawn under one condition:
  target        from d (the target distribution)
  domain_shift  from one other domain (chosen per query, seeded)
  label_shift   from d, every shown label replaced by pi(label) for one derangement pi of the classes
                per domain (labels permuted consistently; the query's true label is still the answer)
  spurious      a nuisance attribute agrees with the label in every example (each shown class gets one
                value of it) but not in the query (its own class's value differs from the query's):
                synthetic_shapes' colour (from metadata.jsonl, examples from d), or for any other
                dataset the domain itself (examples from any domain)
Class balance: each class appears k // C or k // C + 1 times (C classes; which classes get the extra
example is seeded). Everything is a function of (seed, condition, k, query id), so a rerun or another
machine draws the same episodes. Too few images of a class for k is a `DatasetError` naming the
dataset, domain, class and k; a spurious episode the data cannot form is `Unavailable` (skipped and
counted by the caller).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from reasonbed.data.specs import DatasetError


class Unavailable(Exception):  # noqa: N818 - a condition, not an error of the input
    """This episode cannot be formed from the data (e.g. a nuisance attribute with one value)."""


@dataclass(frozen=True)
class Item:
    """An image of the pool: id, path (relative to the data root), domain, label, nuisance value."""

    id: str
    path: str
    domain: str
    label: int
    nuisance: str = ""


@dataclass
class Episode:
    """One query with its in-context examples under one condition."""

    condition: str
    k: int
    query: Item
    examples: list[Item] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)  # label shown with each example (permuted under label_shift)
    cue_label: int = -1  # the class the shift points the query to (label/spurious shift), -1 for none


def balanced_labels(classes: Sequence[int], k: int, rng: random.Random) -> list[int]:
    """k labels, every class k // C or k // C + 1 times, the classes with the extra one drawn by `rng`."""
    classes = sorted(classes)
    return [c for c in classes for _ in range(k // len(classes))] + rng.sample(classes, k % len(classes))


def derangement(n: int, rng: random.Random) -> list[int]:
    """A permutation of range(n) with no fixed point (n >= 2): every label really changes."""
    if n < 2:
        raise ValueError("a label permutation needs at least 2 classes")
    while True:
        order = list(range(n))
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order


class Sampler:
    """Draws query subsets and episodes from one dataset's items."""

    def __init__(self, items: Sequence[Item], class_names: Sequence[str], seed: int, dataset: str,
                 nuisance: str) -> None:
        self.items, self.class_names, self.seed, self.dataset = list(items), list(class_names), seed, dataset
        self.nuisance = nuisance  # "domain" or the name of an image attribute (e.g. "colour")
        self.by_domain: dict[str, list[Item]] = {}
        for item in sorted(self.items, key=lambda item: item.id):
            self.by_domain.setdefault(item.domain, []).append(item)

    def _rng(self, *parts: object) -> random.Random:
        return random.Random("/".join(map(str, (self.seed, *parts))))

    def queries(self, domain: str, n: int) -> list[Item]:
        """The domain's query images: all (n = 0), or a class-balanced seeded subset of n."""
        items = self.by_domain[domain]
        if not n or n >= len(items):
            return list(items)
        rng = self._rng("queries", domain)
        by_label: dict[int, list[Item]] = {}
        for item in items:
            by_label.setdefault(item.label, []).append(item)
        for group in by_label.values():
            rng.shuffle(group)
        chosen: list[Item] = []
        while len(chosen) < n:  # round-robin over classes in a seeded order: balanced as far as classes last
            for label in rng.sample(sorted(by_label), len(by_label)):
                if by_label[label] and len(chosen) < n:
                    chosen.append(by_label[label].pop())
        return sorted(chosen, key=lambda item: item.id)

    def permutation(self, domain: str) -> list[int]:
        """The label-shift permutation of `domain` (one derangement for all its queries)."""
        return derangement(len(self.class_names), self._rng("permutation", domain))

    def _draw(self, pool: Sequence[Item], labels: Sequence[int], rng: random.Random, where: str,
              k: int) -> list[Item]:
        by_label: dict[int, list[Item]] = {}
        for item in pool:
            by_label.setdefault(item.label, []).append(item)
        drawn: list[Item] = []
        for label in sorted(set(labels)):
            need, have = labels.count(label), by_label.get(label, [])
            if len(have) < need:
                raise DatasetError(
                    f"dataset {self.dataset!r}, {where}: k={k} in-context examples need {need} image(s) of class "
                    f"{self.class_names[label]!r} besides the query, but only {len(have)} exist; lower shots or "
                    f"choose other domains")
            drawn.extend(rng.sample(have, need))
        rng.shuffle(drawn)
        return drawn

    def episode(self, condition: str, k: int, query: Item) -> Episode:
        """The k examples of `query` under `condition` (k = 0: no examples)."""
        if k == 0:
            return Episode(condition, 0, query)
        rng = self._rng(condition, k, query.id)
        labels = balanced_labels(range(len(self.class_names)), k, rng)
        own = [item for item in self.by_domain[query.domain] if item.id != query.id]
        if condition == "target":
            examples = self._draw(own, labels, rng, f"domain {query.domain!r}", k)
            return Episode(condition, k, query, examples, [item.label for item in examples])
        if condition == "label_shift":
            examples = self._draw(own, labels, rng, f"domain {query.domain!r}", k)
            permutation = self.permutation(query.domain)
            return Episode(condition, k, query, examples, [permutation[item.label] for item in examples],
                           permutation[query.label])
        if condition == "domain_shift":
            others = sorted(domain for domain in self.by_domain if domain != query.domain)
            if not others:
                raise DatasetError(f"dataset {self.dataset!r}: the domain_shift condition needs a second domain")
            other = rng.choice(others)
            examples = self._draw(self.by_domain[other], labels, rng, f"domain {other!r}", k)
            return Episode(condition, k, query, examples, [item.label for item in examples])
        if condition == "spurious":
            return self._spurious(k, query, labels, rng)
        raise ValueError(f"unknown condition {condition!r}")

    def _spurious(self, k: int, query: Item, labels: list[int], rng: random.Random) -> Episode:
        """Each shown class gets one nuisance value (distinct while values last); the query's class never
        gets the query's own value, so the nuisance agrees with the label in the examples only."""
        if self.nuisance == "domain":
            pool = [item for item in self.items if item.id != query.id]
        else:
            pool = [item for item in self.by_domain[query.domain] if item.id != query.id]
        values = sorted({item.nuisance for item in pool})
        if len(values) < 2:
            raise Unavailable(f"the {self.nuisance} takes one value ({values}) in domain {query.domain!r}")
        groups: dict[tuple[int, str], list[Item]] = {}
        for item in pool:
            groups.setdefault((item.label, item.nuisance), []).append(item)
        shown = rng.sample(sorted(set(labels)), len(set(labels)))
        fitting = {label: [value for value in rng.sample(values, len(values))
                           if len(groups.get((label, value), [])) >= labels.count(label)
                           and not (label == query.label and value == query.nuisance)] for label in shown}
        capacity = -(-len(shown) // len(values))  # each value serves this many classes at most (1: distinct)
        mapping = _assign(shown, fitting, capacity, {})
        if mapping is None:
            raise Unavailable(f"the images of domain {query.domain!r} cannot give {len(shown)} classes "
                              f"{self.nuisance} values of their own")
        examples: list[Item] = []
        for label, value in sorted(mapping.items()):
            examples.extend(rng.sample(groups[(label, value)], labels.count(label)))
        rng.shuffle(examples)
        cue = [label for label, value in sorted(mapping.items()) if value == query.nuisance]
        return Episode("spurious", k, query, examples, [item.label for item in examples],
                       cue[0] if len(cue) == 1 else -1)


def _assign(labels: list[int], fitting: dict[int, list[str]], capacity: int,
            mapping: dict[int, str]) -> dict[int, str] | None:
    """A nuisance value per label from its fitting values, no value used more than `capacity` times
    (backtracking, in the given seeded orders); None when there is none."""
    if len(mapping) == len(labels):
        return dict(mapping)
    label = labels[len(mapping)]
    used = list(mapping.values())
    for value in fitting[label]:
        if used.count(value) < capacity:
            found = _assign(labels, fitting, capacity, {**mapping, label: value})
            if found is not None:
                return found
    return None
