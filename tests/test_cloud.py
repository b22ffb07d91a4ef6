"""Cloud storage and cluster runtime (issue 12, item 5): gs:// through gcsfs, code_version without .git,
the Hugging Face variables forwarded to workers.

gs:// runs end to end against a local GCS emulator (gcp-storage-emulator, the dev extra) through gcsfs
(the gcs extra): adapters read from a gs:// URI, and a Ray Train run whose storage_path is gs:// (its
checkpoints written there and the final adapter read back). Without those packages the gs:// tests skip;
the URL handling tests always run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, local_server, save_random_adapter
from reasonbed import provenance, storage
from reasonbed.config import ConfigError, load
from reasonbed.models.configs import ModelConfig
from reasonbed.ray_runtime import FORWARDED_ENV, worker_runtime_env
from reasonbed.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- URL handling


def test_gs_storage_counts_as_object_storage_on_a_multi_node_cluster(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import reasonbed.ray_runtime as ray_runtime
    from reasonbed.train.driver import check_storage_for_cluster
    from reasonbed.train.rundir import RunDir

    cfg = load(TrainConfig, overrides=[f"run_dir={tmp_path}", "storage_path=gs://bucket/runs/", "name=r1"])
    assert storage.is_remote(cfg.storage_path) and RunDir(cfg).storage_root == "gs://bucket/runs/r1"
    monkeypatch.setattr(ray_runtime, "multi_node", lambda: "3 nodes")
    check_storage_for_cluster(cfg, RunDir(cfg).storage_root)  # fine: every node reads gs://
    local = load(TrainConfig, overrides=[f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"storage_path: '\(empty: run_dir/ray\)' is on the driver's disk, but the "
                                          r"Ray cluster is multi-node \(3 nodes\).*s3://BUCKET/PREFIX or gs://"):
        check_storage_for_cluster(local, RunDir(local).storage_root)
    monkeypatch.setattr(ray_runtime, "multi_node", lambda: "")
    check_storage_for_cluster(local, RunDir(local).storage_root)  # one machine: a local path is fine


def test_a_sweep_on_a_multi_node_cluster_needs_object_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reasonbed.ray_runtime as ray_runtime
    from reasonbed.tune.config import SweepConfig
    from reasonbed.tune.driver import check_sweep_storage

    monkeypatch.setattr(ray_runtime, "multi_node", lambda: "3 nodes")
    check_sweep_storage(load(SweepConfig, overrides=["storage=gs://bucket/sweeps"]))  # every node writes there
    with pytest.raises(ConfigError, match=r"storage: '.*' is on the driver's disk, but the Ray cluster is multi-node "
                                          r"\(3 nodes\).*--storage s3://BUCKET/PREFIX"):
        check_sweep_storage(load(SweepConfig, overrides=[f"storage={tmp_path}"]))
    monkeypatch.setattr(ray_runtime, "multi_node", lambda: "")
    check_sweep_storage(load(SweepConfig, overrides=[f"storage={tmp_path}"]))  # one node: a local folder is fine


# ------------------------------------------------------------------------------- gs:// end to end


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory) -> str:
    """A GCS emulator on 127.0.0.1 with bucket `rb`; STORAGE_EMULATOR_HOST points gcsfs (and workers) at it."""
    pytest.importorskip("gcsfs", reason="the gcs extra (gcsfs) is not installed")
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator (dev extra) is not installed")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
               "--in-memory", "--default-bucket", "rb"]
    with local_server(command, endpoint + "/storage/v1/b", tmp_path_factory.mktemp("gcs") / "emulator.log",
                      "GCS emulator"):
        saved = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        yield endpoint
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved


@pytest.fixture(scope="module")
def seed_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny Qwen2-VL with non-zero B matrices (so it changes the model)."""
    # B large enough to move the pretrained model
    return save_random_adapter(tmp_path_factory.mktemp("seed") / "adapter", ModelConfig(), seed=1, std=0.5)


def _tensors(path: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_adapters_are_read_from_gs(gcs_emulator: str, seed_adapter: Path) -> None:  # noqa: ARG001
    import torch

    from reasonbed.models.lora import local_adapter
    from reasonbed.train.checkpointing import read_adapter_weights

    fs, path = storage.filesystem("gs://rb/adapters/seed")
    fs.put(f"{seed_adapter}/", path, recursive=True)
    expected = _tensors(seed_adapter)
    weights = read_adapter_weights("gs://rb/adapters/seed")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)
    local = Path(local_adapter("gs://rb/adapters/seed"))
    assert (local / "adapter_config.json").read_bytes() == (seed_adapter / "adapter_config.json").read_bytes()
    with pytest.raises(FileNotFoundError, match="gs://rb/adapters/none"):
        read_adapter_weights("gs://rb/adapters/none")
    filesystem, where = storage.pyarrow_filesystem("gs://rb/adapters")
    assert where == "rb/adapters" and filesystem is not None


@pytest.mark.slow
def test_ray_train_run_with_gs_storage_and_a_gs_init_adapter(gcs_emulator: str, seed_adapter: Path,
                                                             tmp_path: Path, ray_session) -> None:
    """zero_shot (0 steps) from a gs:// adapter, storage on gs://: the run's one checkpoint is written to the
    emulator by Ray Train and the run's adapter, read back from it, is the initial adapter. The job joins the
    session's Ray; its runtime_env gives the workers the emulator's address (STORAGE_EMULATOR_HOST)."""
    import torch

    fs, path = storage.filesystem("gs://rb/adapters/e2e")
    fs.put(f"{seed_adapter}/", path, recursive=True)
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator,
           "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}
    env["RAY_ADDRESS"] = ray_session.get_runtime_context().gcs_address
    command = [sys.executable, str(REPO / "jobs" / "train.py"), "--smoke-test", "--method", "zero_shot",
               "init_adapter=gs://rb/adapters/e2e", "storage_path=gs://rb/runs", "name=gs-e2e",
               f"run_dir={tmp_path / 'run'}", "data.images_per_class=2", "eval.max_per_domain=1"]
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 0
    checkpoints = fs.glob("rb/runs/gs-e2e/checkpoint_step*/adapter/adapter_model.safetensors")
    assert len(checkpoints) == 1, fs.find("rb/runs")
    assert fs.exists("rb/runs/gs-e2e/reasonbed-run.yaml")  # the run's claim on its storage
    final, expected = _tensors(tmp_path / "run" / "adapter"), _tensors(seed_adapter)
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in expected)


# ------------------------------------------------------------------------ code_version and variables


def test_code_version_without_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert provenance.code_version() == provenance.git_commit()  # in this checkout: the commit
    monkeypatch.setattr(provenance, "git_commit", lambda path=None: None)  # e.g. a runtime_env upload
    monkeypatch.setenv(provenance.CODE_VERSION_ENV, "0123abc")
    version = provenance.code_version()
    assert version == f"0123abc+package-sha256:{provenance.package_digest()[:16]}"  # named, and what ran
    monkeypatch.delenv(provenance.CODE_VERSION_ENV)
    version = provenance.code_version()
    assert version.startswith("package-sha256:") and len(version) == len("package-sha256:") + 16
    package = Path(provenance.__file__).resolve().parent
    copy = tmp_path / "unpacked" / "reasonbed"  # the same code elsewhere (another node's working dir)
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert provenance.package_digest(copy) == provenance.package_digest()
    (copy / "storage.py").write_text((copy / "storage.py").read_text() + "\n# changed\n")
    assert provenance.package_digest(copy) != provenance.package_digest()


def test_hugging_face_variables_reach_workers_and_no_output(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from reasonbed import cli

    token = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_HOME", "/mnt/hf-cache")
    monkeypatch.setenv(provenance.CODE_VERSION_ENV, "0123abc")
    assert {"HF_TOKEN", "HF_HOME", "REASONBED_CODE_VERSION", "STORAGE_EMULATOR_HOST"} <= set(FORWARDED_ENV)
    env_vars = worker_runtime_env()["env_vars"]
    assert env_vars["HF_TOKEN"] == token and env_vars["HF_HOME"] == "/mnt/hf-cache"
    assert cli.main(["train", "--smoke-test", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err


@pytest.mark.slow
def test_vllm_engine_loads_an_adapter_from_object_storage(s3_bucket: str, seed_adapter: Path) -> None:
    """SARR's self-chain engine gets the previous stage's adapter as a URI in the run's storage."""
    from PIL import Image

    from reasonbed.inference.base import EngineConfig, Request, SamplingConfig
    from reasonbed.inference.vllm_engine import VLLMEngine

    fs, path = storage.filesystem(f"s3://{s3_bucket}/adapters/seed")
    fs.put(f"{seed_adapter}/", path, recursive=True)
    # the offline engine: the async one (the default) adds an engine-core process; test_generation.py tests it
    engine = VLLMEngine(EngineConfig(name="vllm", lora_path=str(seed_adapter), max_model_len=1024, vllm_async=False))
    try:
        request = Request(Image.new("RGB", (56, 56), (200, 40, 30)), "What is in this photo?", {"id": "a"})
        greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=8)
        local = engine.generate([request], greedy)[0][0].token_ids
        engine.load_adapter(f"s3://{s3_bucket}/adapters/seed")
        fetched = Path(engine._lora.lora_path)
        assert fetched.is_dir() and (fetched / "adapter_model.safetensors").read_bytes() == \
            (seed_adapter / "adapter_model.safetensors").read_bytes()
        assert engine.generate([request], greedy)[0][0].token_ids == local
        engine._lora = None  # the base model: the adapter did change the answer
        assert engine.generate([request], greedy)[0][0].token_ids != local
    finally:
        engine.close()
