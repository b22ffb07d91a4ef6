"""Training on Ray Train: every method runs and its loss falls, accuracy on an easy split, DDP replicas,
resume after a worker death, SARR's keep rule and a full round with vLLM, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonbed.config import ConfigError, load
from reasonbed.data.specs import DatasetError
from reasonbed.generation.validate import judge
from reasonbed.methods import METHODS
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


def _sarr_overrides() -> list[str]:  # also a held-out source domain: it must get no self-chains
    return ["method_config.rounds=1", "method_config.epochs_per_round=1.0", "method_config.candidates=1",
            "method_config.max_tokens=24", "val_domain=sketch"]


@pytest.mark.slow
@pytest.mark.parametrize("method", [name for name in METHODS.names() if name != "grpo"])
def test_every_method_runs_and_loss_falls(method, tmp_path, teacher_chains, ray_session):
    overrides = [f"method={method}", f"chains={teacher_chains}"] + (_sarr_overrides() if method == "sarr" else [])
    result = run(_cfg(tmp_path, *overrides))
    stage0 = [row for row in result.metrics if row.get("round", 0) == 0]
    assert len(stage0) == 3 and stage0[-1]["loss"] < stage0[0]["loss"], [row["loss"] for row in stage0]
    run_dir = result.run_dir
    assert (run_dir / "done").exists() and (run_dir / "adapter" / "adapter_model.safetensors").exists()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.metrics) and "val_acc" in json.loads(lines[-1])
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["data_manifest_sha256"] and provenance["packages"]["ray"] == "2.60.0"
    if method == "sarr":  # one full round: vLLM with the adapter wrote self-chains, training continued on them
        rounds = [json.loads(line) for line in (run_dir / "sarr_rounds.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rounds] == [0, 1] and 0.0 <= rounds[1]["kept_pct"] <= 100.0
        shards = list((run_dir / "round1" / "chains").rglob("*.parquet"))
        assert shards and {row["round"] for row in result.metrics} == {0, 1}
        import pyarrow.parquet as pq

        domains = {domain for shard in shards for domain in pq.read_table(shard, columns=["domain"])["domain"].to_pylist()}
        assert domains and "sketch" not in domains and "photo" not in domains, domains


def test_direct_beats_chance_on_easy_split(tmp_path, ray_session):
    """CI budget: 240 steps of batch 16 (~1 min on 2 CPUs); the whole test domain is evaluated."""
    cfg = _cfg(tmp_path, "method=direct", "data.palette=by_class", "data.images_per_class=12",
               "optim.batch_size=16", "optim.max_steps=240", "optim.lr=5e-3", "optim.warmup_ratio=0.05",
               "eval.every=0")
    final = run(cfg).final
    chance = 1 / 6
    assert final["test_acc"] >= 2 * chance, final  # measured: see docs/training.md
    assert final["unparseable/direct"] < 0.2


def test_two_workers_end_with_identical_adapters(tmp_path, ray_session):
    result = run(_cfg(tmp_path, "scale.num_workers=2", "optim.max_steps=4", "eval.every=0"))
    hashes = [path.read_text() for path in sorted((result.run_dir / "replicas").glob("rank*.sha256"))]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    # The same run directory: another config is refused and nothing written is lost ...
    saved = {name: (result.run_dir / name).read_bytes() for name in ("config.yaml", "done", "metrics.jsonl")}
    with pytest.raises(ConfigError, match=r"holds a run with another config \(optim.lr: 0.003 -> 0.01\)"):
        run(_cfg(tmp_path, "scale.num_workers=2", "optim.max_steps=4", "eval.every=0", "optim.lr=0.01"))
    assert {name: (result.run_dir / name).read_bytes() for name in saved} == saved
    # ... and the same command again resumes the finished run: its result, no training step redone.
    again = run(_cfg(tmp_path, "scale.num_workers=2", "optim.max_steps=4", "eval.every=0"))
    assert again.metrics == result.metrics and (again.run_dir / "done").exists()
    assert (again.adapter / "adapter_model.safetensors").read_bytes() == \
        (result.adapter / "adapter_model.safetensors").read_bytes()


def test_worker_killed_mid_run_resumes_from_checkpoint(tmp_path, ray_session):
    result = run(_cfg(tmp_path, "fail_at_step=6", "optim.max_steps=12", "eval.every=4"))
    steps = [row["step"] for row in result.metrics]
    assert steps[-1] == 12 and 4 in steps and 8 in steps and steps == sorted(steps)
    log = (result.run_dir / "replicas" / "rank0.resumed").read_text()
    assert log.strip() == "4", "the restarted worker resumed from the step-4 checkpoint, not from 0"


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
