"""Shared pytest fixtures: an isolated environment, one local Ray and one tiny model per session.

Everything the tests write (Ray's temp dir, Hugging Face, vLLM and torch caches, the tiny-model
cache) goes under one temporary directory, set before any heavy import.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="rbtest-"))
for _name, _sub in {
    "HF_HOME": "hf", "VLLM_CACHE_ROOT": "vllm", "XDG_CACHE_HOME": "xdg", "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "REASONBED_CACHE": "reasonbed", "RAY_TMPDIR": "ray", "TRITON_CACHE_DIR": "triton",
    "MPLCONFIGDIR": "mpl",
}.items():
    os.environ[_name] = str(_SESSION_ROOT / _sub)
    (_SESSION_ROOT / _sub).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import reasonbed  # noqa: E402,F401  (installs the torchvision import fix in this process)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A real S3-compatible server (moto) on 127.0.0.1; its endpoint is set in the environment.

    Started before the session's Ray so that Ray's workers inherit the endpoint and the test
    credentials (which are moto's dummies, not secrets).
    """
    port = _free_port()
    log = open(_SESSION_ROOT / "moto.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited: see {_SESSION_ROOT / 'moto.log'}") from None
            time.sleep(0.2)
    else:
        raise RuntimeError("moto server did not start within 60 s")
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    yield endpoint
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: str):
    """A fresh bucket on the moto server; returns its name."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    name = f"rb-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    return name


@pytest.fixture(scope="session")
def ray_session(s3_server: str):  # noqa: ARG001 - workers must inherit the S3 endpoint
    """One local Ray for the whole session (2 CPUs, no dashboard), shut down at the end."""
    import ray

    from reasonbed.ray_runtime import init_ray

    init_ray(num_cpus=2, temp_dir=os.environ["RAY_TMPDIR"])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Qwen2-VL built once per session by the offline factory."""
    from reasonbed.models.tiny import build_tiny_model

    return build_tiny_model("qwen2_vl", size="tiny", seed=0)


@pytest.fixture(scope="session")
def teacher_chains(tmp_path_factory, ray_session) -> str:
    """Template-teacher chains (two per image) for synthetic_shapes with 3 images per (domain, class)."""
    from reasonbed.config import load
    from reasonbed.train.config import TrainConfig
    from reasonbed.train.run import smoke_chains

    run_dir = tmp_path_factory.mktemp("teacher-chains")
    return smoke_chains(load(TrainConfig, base={"data": {"dataset": "synthetic_shapes", "images_per_class": 3},
                                                 "run_dir": str(run_dir)}))
