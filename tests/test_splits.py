"""LODO splits: deterministic, exact holdout per source domain, no test-domain leakage, for every spec."""

from __future__ import annotations

import random

import pytest

from reasonbed.data.reader import stable_id
from reasonbed.data.specs import DATASETS, DatasetError, get_spec
from reasonbed.data.splits import LeakageError, LodoSplit, all_lodo_splits, lodo_split


def _index(spec, per_domain: int = 37):
    rows = []
    for d, domain in enumerate(spec.domains):
        for i in range(per_domain + d):  # unequal domain sizes
            class_name = spec.classes[i % len(spec.classes)]
            path = f"{domain}/{class_name}/{i:05d}.jpg"
            rows.append({"id": stable_id(spec.name, path), "domain": domain, "path": path})
    return rows


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_domain_of_every_spec(name):
    spec = get_spec(name)
    index = _index(spec)
    splits = all_lodo_splits(spec, index, holdout_fraction=0.2, seed=0)
    assert set(splits) == set(spec.domains)
    shuffled = list(index)
    random.Random(3).shuffle(shuffled)
    again = all_lodo_splits(spec, shuffled, holdout_fraction=0.2, seed=0)
    domain_of = {row["id"]: row["domain"] for row in index}
    for test_domain, split in splits.items():
        assert split == again[test_domain], "order of the rows must not matter"
        test_ids = {i for i, d in domain_of.items() if d == test_domain}
        assert set(split.test) == test_ids
        assert not (split.train_ids | split.val_ids) & test_ids
        for domain in split.source_domains:
            n = sum(1 for d in domain_of.values() if d == domain)
            assert len(split.val[domain]) == round(n * 0.2)
            assert len(split.train[domain]) + len(split.val[domain]) == n
            assert not set(split.train[domain]) & set(split.val[domain])
    other_seed = lodo_split(spec, index, spec.domains[0], seed=1)
    assert other_seed.val != splits[spec.domains[0]].val


def test_leakage_is_refused():
    spec = get_spec("pacs")
    split = lodo_split(spec, _index(spec), "sketch")
    leaked_val = dict(split.val)
    leaked_val["photo"] = (*split.val["photo"], split.test[0])
    with pytest.raises(LeakageError, match="test-domain"):
        LodoSplit(split.test_domain, split.source_domains, split.train, leaked_val, split.test, 0.2, 0)


def test_bad_split_requests():
    spec = get_spec("pacs")
    with pytest.raises(DatasetError, match="no domain 'clipart'"):
        lodo_split(spec, _index(spec), "clipart")
    with pytest.raises(DatasetError, match="holdout_fraction"):
        lodo_split(spec, _index(spec), "sketch", holdout_fraction=1.0)
    only_photo = [row for row in _index(spec) if row["domain"] == "photo"]
    with pytest.raises(DatasetError, match="test domain 'sketch' has no rows"):
        lodo_split(spec, only_photo, "sketch")
