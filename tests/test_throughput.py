"""Throughput changes that must not change results (issue 14): the training data order computed once
per epoch gives the stream it gave before, and evaluation by default skips the source domains' in parts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reasonbed.config import load
from reasonbed.train import data
from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import prepare_examples, resolve
from reasonbed.train.evaluate import eval_rows
from reasonbed.train.run import run


def reference_step_indices(n: int, batch_size: int, step: int, seed: int) -> list[tuple[int, int]]:
    """The stream before issue 14 (`git show cd5a14a:platform/reasonbed/train/data.py`): one reshuffle of
    the whole epoch per example."""

    def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
        order = list(range(n))
        random.Random(f"{seed}/epoch/{epoch}").shuffle(order)
        return order

    picked = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n)
        picked.append((epoch_order(n, seed, epoch)[offset], epoch))
    return picked


@pytest.mark.parametrize(("n", "batch_size", "seed"), [(7, 3, 0), (16, 4, 1), (10, 10, 2), (5, 8, 3), (97, 16, 0)])
def test_step_indices_are_the_stream_of_the_previous_implementation(n, batch_size, seed):
    steps = 3 * n // batch_size + 3  # three epochs and more: batches that cross epoch boundaries
    crossing = [step for step in range(steps) if (step * batch_size) // n != ((step + 1) * batch_size - 1) // n]
    assert crossing or n % batch_size == 0
    for step in [*range(steps), 10 * steps + 1]:  # and a step far ahead, as after a resume
        assert data.step_indices(n, batch_size, step, seed) == reference_step_indices(n, batch_size, step, seed)


def test_a_step_shuffles_at_most_the_two_epochs_it_touches():
    data.epoch_order.cache_clear()
    for step in range(50):  # 6,000 examples (PACS size), batch 32: about a quarter of an epoch
        data.step_indices(6000, 32, step, 0)
    assert data.epoch_order.cache_info().misses == 1, "the epoch's permutation is computed once"
    data.step_indices(6000, 32, 187, 0)  # positions 5984-6015: the end of epoch 0 and the start of epoch 1
    assert data.epoch_order.cache_info().misses == 2


SMALL = {"data": {"dataset": "synthetic_shapes", "images_per_class": 2}, "test_domain": "photo",
         "val_domain": "sketch", "method": "direct",
         "optim": {"batch_size": 4, "max_steps": 1, "warmup_ratio": 0.0},
         "eval": {"every": 0, "max_per_domain": 0, "batch_size": 16}, "scale": {"backend": "local"}}


def _cfg(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load(TrainConfig, overrides=[f"run_dir={tmp_path / 'run'}", *overrides], base=SMALL)


def test_evaluation_rows_leave_out_the_source_in_parts_unless_asked(tmp_path):
    cfg, spec, _, index = resolve(_cfg(tmp_path))
    _, rows = prepare_examples(cfg, spec, index)
    source_in = {row["id"] for row in rows if row["role"] == "source" and row["part"] == "in"}
    assert source_in and len(source_in) < len(rows)
    for max_per_domain in (0, 2):
        default = eval_rows(rows, max_per_domain, seed=0)
        assert default and not source_in & {row["id"] for row in default}
        assert {(row["role"], row["part"]) for row in default} == {
            ("source", "out"), ("test", "in"), ("test", "out"), ("heldout", "heldout")}
        asked = eval_rows(rows, max_per_domain, seed=0, in_parts=True)
        assert source_in & {row["id"] for row in asked}
    assert len(eval_rows(rows, 0, seed=0)) == len(rows) - len(source_in)
    assert {row["id"] for row in eval_rows(rows, 0, seed=0, in_parts=True)} == {row["id"] for row in rows}


def _source_in_keys(metrics: dict) -> set[str]:
    return {key for key in metrics if key.startswith("acc/direct/") and key.split("/")[2] in ("cartoon", "painting")
            and key.endswith("/in")}


@pytest.mark.slow
def test_a_run_reports_source_in_part_accuracy_only_with_eval_in_parts(tmp_path):
    """Two tiny in-process runs (scale.backend=local) of one step: every metric of the default run is of
    what selection and reports use; with eval.in_parts=true the source in parts are there too."""
    default = run(_cfg(tmp_path / "default")).final
    assert not _source_in_keys(default), default
    assert {"acc/direct/cartoon/out", "acc/direct/photo/in", "acc/direct/photo/out", "acc/direct/sketch/heldout",
            "val_acc", "test_acc"} <= set(default)
    asked = run(_cfg(tmp_path / "asked", "eval.in_parts=true")).final
    assert _source_in_keys(asked) == {"acc/direct/cartoon/in", "acc/direct/painting/in"}
    assert set(default) <= set(asked), "in_parts only adds the source in parts"
