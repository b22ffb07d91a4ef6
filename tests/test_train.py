"""Training: SARR's keep rule, the validation domain, and bad input. (DDP replicas and the resume after a worker
death: tests/test_grpo.py's Ray Train run, on the same worker loop.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from reasonbed.config import ConfigError, load
from reasonbed.data.specs import DatasetError
from reasonbed.generation.validate import judge
from reasonbed.prompts import STAGES, format_chain
from reasonbed.registry import RegistryError
from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import prepare_examples, resolve
from reasonbed.train.run import run

SMALL = {"data": {"dataset": "synthetic_shapes", "images_per_class": 3}, "test_domain": "photo",
         "optim": {"batch_size": 8, "max_steps": 12, "lr": 3e-3, "warmup_ratio": 0.0},
         "eval": {"every": 4, "max_per_domain": 3, "reasoning_max_tokens": 24}}


def _cfg(tmp_path: Path, *overrides: str, base: dict | None = None) -> TrainConfig:
    return load(TrainConfig, overrides=[f"run_dir={tmp_path / 'run'}", *overrides], base=base or SMALL)


def test_sarr_keep_rule_on_hand_written_chains():
    classes = ["circle", "star"]
    stages = {stage: "x" for stage in STAGES}
    assert judge(format_chain({**stages, "CONCLUSION": "star"}), classes, 1)["kept"]
    assert not judge(format_chain({**stages, "CONCLUSION": "circle"}), classes, 1)["kept"]
    assert not judge(format_chain({**stages, "CONCLUSION": "star or circle"}), classes, 1)["kept"]
    assert not judge("<SUMMARY>x</SUMMARY><CONCLUSION>star</CONCLUSION>", classes, 1)["kept"]


# --- bad input --------------------------------------------------------------------------------------

def test_unknown_method(tmp_path):
    with pytest.raises(RegistryError, match="unknown method 'lora_magic'.*direct.*mtct"):
        run(_cfg(tmp_path, "method=lora_magic"))


@pytest.mark.parametrize("method", ["reasoning", "mtct"])
def test_missing_chains(method, tmp_path):
    cfg, spec, _, index = resolve(_cfg(tmp_path, f"method={method}"))
    with pytest.raises(ConfigError, match=f"method '{method}' needs teacher chains"):
        prepare_examples(cfg, spec, index)


def test_val_domain_is_left_out_of_training_and_evaluated_whole(tmp_path):
    cfg, spec, _, index = resolve(_cfg(tmp_path, "val_domain=sketch"))
    examples, rows = prepare_examples(cfg, spec, index)
    assert examples and all(example["domain"] != "sketch" for example in examples)
    sketch = [row for row in rows if row["domain"] == "sketch"]
    assert sketch and {(row["role"], row["part"]) for row in sketch} == {("heldout", "heldout")}
    assert {(row["role"], row["part"]) for row in rows if row["domain"] == "photo"} == {("test", "in"), ("test", "out")}
    assert "-vsketch-s0-" in cfg.run_name
    with pytest.raises(ConfigError, match="val_domain 'photo' is the test domain"):
        resolve(_cfg(tmp_path, "val_domain=photo"))
    with pytest.raises(DatasetError, match="no domain 'clipart'"):
        resolve(_cfg(tmp_path, "val_domain=clipart"))


def test_test_domain_not_in_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no domain 'clipart'"):
        resolve(_cfg(tmp_path, "test_domain=clipart"))


def test_batch_size_must_divide_over_workers(tmp_path):
    with pytest.raises(ConfigError, match="batch_size 6 does not divide over scale.num_workers 4"):
        _cfg(tmp_path, "optim.batch_size=6", "scale.num_workers=4")
    with pytest.raises(ConfigError, match="grad_accum 3 does not divide"):
        _cfg(tmp_path, "optim.batch_size=8", "optim.grad_accum=3")
