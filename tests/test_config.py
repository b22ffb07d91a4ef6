"""Config loading: YAML plus key=value overrides, with errors naming the key, value and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from reasonbed.config import ConfigError, load, parse_override
from reasonbed.data.catalog import DataConfig


@dataclass
class Inner:
    r: int = 8
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj"])


@dataclass
class Outer:
    name: str = "run"
    inner: Inner = field(default_factory=Inner)
    mode: str = "a"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: from-yaml\ninner:\n  r: 4\n  targets: [a, b]\n")
    cfg = load(Outer, [path], ["inner.dropout=1e-1", "inner.r=16"])
    assert cfg.name == "from-yaml"
    assert cfg.inner.r == 16 and cfg.inner.dropout == pytest.approx(0.1) and cfg.inner.targets == ["a", "b"]


def test_unknown_key_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as error:
        load(Outer, overrides=["inner.rank=3"])
    message = str(error.value)
    assert "inner.rank" in message and "3" in message and "dropout" in message and "targets" in message


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError) as error:
        load(Outer, overrides=["inner.r=eight"])
    assert "inner.r" in str(error.value) and "eight" in str(error.value) and "int" in str(error.value)


def test_bool_is_not_an_int_and_list_items_checked():
    with pytest.raises(ConfigError, match="inner.r"):
        load(Outer, overrides=["inner.r=true"])
    with pytest.raises(ConfigError, match=r"inner.targets\[1\]"):
        load(Outer, overrides=["inner.targets=[a, [b]]"])


def test_literal_values_are_listed():
    with pytest.raises(ConfigError) as error:
        load(DataConfig, overrides=["on_corrupt=ignore"])
    assert "'error'" in str(error.value) and "'skip'" in str(error.value) and "ignore" in str(error.value)


def test_post_init_validation_and_unknown_dataset():
    with pytest.raises(ConfigError, match="holdout_fraction.*1.5"):
        load(DataConfig, overrides=["holdout_fraction=1.5"])
    with pytest.raises(ConfigError, match="unknown dataset 'pacz'.*pacs"):
        load(DataConfig, overrides=["dataset=pacz"])


def test_bad_override_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("no-equals-sign")
    with pytest.raises(ConfigError, match="does not exist"):
        load(Outer, [tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(Outer, [bad])


@pytest.mark.parametrize(("backend", "cpus"), [("local", 0.0), ("ray", 0.75)])
def test_sarr_self_chain_engine_of_a_local_run_uses_the_runs_own_cpu(tmp_path, backend, cpus):
    """A run that trains in its own process (a sweep trial of --smoke-test) holds its CPU while its self-chain
    engine generates, so the engine asks Ray for none: asking for one deadlocked two such SARR trials of parallel
    studies on 2 CPUs. On Ray Train (the worker group ended) the engine and one image loader share one CPU: with a
    whole CPU per engine, two trials generating at once on 2 CPUs left their loaders waiting forever."""
    import json

    from reasonbed.generation.pipeline import LOADER_CPUS
    from reasonbed.methods.sarr import SARRConfig
    from reasonbed.train.config import TrainConfig
    from reasonbed.train.sarr import self_chain_engine

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    cfg = load(TrainConfig, overrides=["method=sarr", f"model.path={tmp_path}", "model.family=qwen2_vl",
                                       f"scale.backend={backend}", f"run_dir={tmp_path / 'run'}"])
    engine = self_chain_engine(cfg, SARRConfig(engine="hf"), adapter=str(tmp_path / "adapter"))
    assert engine.actor_options()["num_cpus"] == cpus and engine.lora_path == str(tmp_path / "adapter")
    assert cpus == 0 or cpus + LOADER_CPUS <= 1.0, "an engine and one of its loaders fit in the CPU its run held"


@pytest.mark.parametrize(("backend", "given", "cpus"), [("local", None, 0.0), ("ray", None, 1.0), ("local", 2.0, 2.0)])
def test_grpo_vllm_rollout_actor_of_a_local_run_uses_the_runs_own_cpu(tmp_path, backend, given, cpus):
    """The same for GRPO's vLLM rollout actor (rollouts and updates alternate): by default none in a run that
    trains in its own process, one beside Ray Train's workers, and `method_config.rollout_cpus` when given."""
    import json

    from reasonbed.methods.grpo import GRPOConfig
    from reasonbed.rl.step import rollout_engine_config
    from reasonbed.train.config import TrainConfig

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    cfg = load(TrainConfig, overrides=["method=grpo", f"model.path={tmp_path}", "model.family=qwen2_vl",
                                       f"scale.backend={backend}", f"run_dir={tmp_path / 'run'}"])
    engine = rollout_engine_config(cfg, GRPOConfig(engine="vllm", rollout_cpus=given), str(tmp_path))
    assert engine.name == "vllm_actor" and engine.actor_options()["num_cpus"] == cpus
    assert rollout_engine_config(cfg, GRPOConfig(engine="hf"), str(tmp_path)).name == "hf"
