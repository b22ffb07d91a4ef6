"""Shared pytest fixtures: an isolated environment, one local Ray and one tiny model per session; vLLM's
OpenAI-compatible server (`start_vllm_server`) and one small trained adapter (`trained_run`) for the
tests that serve, export and predict.

Everything the tests write (Ray's temp dir, Hugging Face, vLLM and torch caches, the tiny-model
cache, every process's TMPDIR) goes under one temporary directory, set before any heavy import.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from reasonbed.models.configs import ModelConfig

# The system's temp dir, read once by the controller (pytest-xdist's workers inherit it): each process's session root
# is made there, and so are the folders of the tests that need short paths (Ray's socket paths stay under 108
# characters), and pytest's tmp_path folders (pytest keeps the last three runs' for a look after a failure).
SYSTEM_TMP = os.environ.setdefault("REASONBED_TEST_SYSTEM_TMP", tempfile.gettempdir())
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", SYSTEM_TMP)
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="rbtest-", dir=SYSTEM_TMP))
for _name, _sub in {
    "HF_HOME": "hf", "VLLM_CACHE_ROOT": "vllm", "XDG_CACHE_HOME": "xdg", "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "REASONBED_CACHE": "reasonbed", "RAY_TMPDIR": "ray", "TRITON_CACHE_DIR": "triton",
    "MPLCONFIGDIR": "mpl", "VLLM_RPC_BASE_PATH": "rpc",  # vLLM's engine sockets (else in /tmp, left behind)
    "TMPDIR": "tmp",  # the rest: vLLM's FileStore files, multiprocessing's pymp-* folders of killed Ray workers, ...
}.items():
    os.environ[_name] = str(_SESSION_ROOT / _sub)
    (_SESSION_ROOT / _sub).mkdir(parents=True, exist_ok=True)
tempfile.tempdir = None  # this process reads TMPDIR again
# Developers may keep the pretrained tiny models between sessions (CI builds them fresh, once per session).
# Under pytest-xdist (`make test-fast` runs two workers) the controller imports this file first and names its own
# cache here; the workers inherit it and share it: the tiny models and offline datasets are built once (under a
# file lock; every cache write is a rename), while each worker keeps its own Ray, temp dirs and servers.
if not os.environ.get("REASONBED_TEST_MODEL_CACHE") and "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ["REASONBED_TEST_MODEL_CACHE"] = str(_SESSION_ROOT / "reasonbed")
os.environ["REASONBED_CACHE"] = os.environ.get("REASONBED_TEST_MODEL_CACHE") or str(_SESSION_ROOT / "reasonbed")
# vLLM's model-info cache too: each worker's first engine would otherwise inspect the model class in a subprocess of
# its own (about 19 s of CPU, measured: docs/benchmarks.md); vLLM writes the cache atomically.
if "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ["REASONBED_TEST_VLLM_CACHE"] = os.environ["VLLM_CACHE_ROOT"]
os.environ["VLLM_CACHE_ROOT"] = os.environ.get("REASONBED_TEST_VLLM_CACHE") or os.environ["VLLM_CACHE_ROOT"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Two Ray settings that only save CPU, for the session's Ray and the tests' own heads (tests/own_ray_head.py), measured
# in docs/benchmarks.md: Ray Train's preemption watcher only logs spot-instance preemptions (none happen here), and
# each fit would start it as an actor of its own (about 2.7 s of CPU); Ray's log monitor globs its logs folder ten
# times a second while it holds under 1000 files, and at 0 every 0.5 s (Ray's LOG_NAME_UPDATE_INTERVAL_S): half its
# CPU with 261 files, a new worker's output reaching its driver at most 0.4 s later.
SUITE_RAY_KNOBS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0"}
for _name, _value in SUITE_RAY_KNOBS.items():
    os.environ.setdefault(_name, _value)
# pytest-xdist's workers share the machine's cores: each worker's torch (and the Ray workers it starts) gets its
# share of threads, one each for two workers on two cores, instead of every process's OpenMP pool spinning on all
# cores against the others.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # vLLM's CPU worker too (it binds all cores by default)

import reasonbed  # noqa: E402,F401  (installs the torchvision import fix in this process)

# The pretrained tiny model takes 2 to 5 minutes to build on a fresh 2-core machine (two processes of one torch
# thread each; docs/training.md, "The tiny world"). The session starts that build at once, in a process of its own
# that replays the two (`reasonbed tiny-model --no-eval --in-one-process`: the same bytes for less CPU, as the
# tests keep both cores busy anyway; docs/benchmarks.md), and first runs the tests of these files that need no
# pretrained model (the others carry the mark `pretrained_model`); a test that needs it waits on the factory's
# build lock, then reuses the build. Files without a model test first, then those whose slow tests run the random
# tiny model (RANDOM_MODEL below), then those with a test of the pretrained model at their end, so that on two
# workers (`make test` hands out a whole file at a time, in this order) both keep working while the model builds
# and neither waits for it early.
MODEL_FREE_FIRST = (
    "test_cluster.py", "test_runtime.py", "test_report.py", "test_data.py", "test_documented_commands.py",
    "test_cli.py", "test_config.py", "test_layering.py", "test_prompts.py", "test_rewards.py", "test_selection.py",
    "test_splits.py", "test_install.py",
    "test_multinode.py", "test_storage_faults.py", "test_placement.py", "test_readme_headline.py", "test_wheel.py",
    "test_sweep_control.py", "test_core.py",
)
# Then the other files, the longest first (their summed test times, measured: docs/benchmarks.md, "The test
# suite"), so that the last files handed out are short ones and neither worker idles long at the end.
LONGEST_FIRST = (
    "test_methods.py", "test_grpo.py", "test_generation.py", "test_evaluation_run.py", "test_share.py",
    "test_pretrain.py", "test_cloud.py", "test_tune.py", "test_openai_engine.py", "test_tracking.py",
    "test_novllm.py", "test_models.py",
)
_model_build: subprocess.Popen | None = None
# The randomly initialised tiny model (its build takes about 12 s): for the slow tests whose assertions are about
# wiring, storage, faults or control rather than learning. They need not wait for the pretrained model, so they
# run while it builds (the mark `pretrained_model` is for the tests that need learning).
RANDOM_MODEL = "model.tiny_pretrained=false"


@pytest.hookimpl(trylast=True)  # after -m/-k/--deselect: a selection of model-free tests starts no build
def pytest_collection_modifyitems(session, config, items):  # noqa: ARG001
    global _model_build
    first = {name: index for index, name in enumerate(MODEL_FREE_FIRST)}
    longest = {name: index for index, name in enumerate(LONGEST_FIRST)}

    def model_free(item: pytest.Item) -> bool:
        return item.path.name in first and item.get_closest_marker("pretrained_model") is None

    def order(item: pytest.Item) -> tuple[int, int]:
        if model_free(item):
            return 0, first[item.path.name]
        return 1, longest.get(item.path.name, len(longest))

    items.sort(key=order)  # stable: tests keep their order within a file
    if _model_build is None and any(not model_free(item) for item in items):
        # At a lower priority (nice 10): the tests beside it keep both cores busy, and a Ray head or raylet they
        # start must register within Ray's fixed 30 s; with the build competing at equal priority, `ray start`
        # timed out there in two clean-clone runs. The build takes what the tests leave idle.
        with open(_SESSION_ROOT / "tiny-model-build.log", "wb") as log:
            build = [sys.executable, "-m", "reasonbed", "tiny-model", "--no-eval", "--in-one-process"]  # less CPU
            _model_build = subprocess.Popen(build, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    if _model_build is not None and _model_build.poll() is None:  # a selection that never needed the model
        _model_build.terminate()
        _model_build.wait(timeout=30)
    for _ in range(5):  # a Ray process that outlives `ray.shutdown()` by a moment may still write a file into it
        shutil.rmtree(_SESSION_ROOT, ignore_errors=True)
        if not _SESSION_ROOT.exists():
            break
        time.sleep(1.0)


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


def save_random_adapter(directory: Path, model: ModelConfig, seed: int, std: float) -> Path:
    """A LoRA adapter of `model` (a tiny Qwen2-VL; the training's default LoRA layout) whose B matrices are seeded
    N(0, std) draws, so that it changes the model: saved as safetensors in `directory`."""
    import torch

    from reasonbed.models import LoraConfig, apply_lora, load_model_and_processor

    loaded, _ = load_model_and_processor(model)
    loaded = apply_lora(loaded, LoraConfig(), "qwen2_vl")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in loaded.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    loaded.save_pretrained(directory, safe_serialization=True)
    return directory


def short_temp_dir(prefix: str) -> Path:
    """A new folder in the system's temp dir, not the session's deeper root: for a Ray of a test's own, whose socket
    paths under it must stay under 108 characters. The test removes it."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SYSTEM_TMP))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_server(command: Sequence[str], probe_url: str, log_path: Path, name: str, start_s: float = 60.0,
                 env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A server process of the tests (moto, the GCS emulator, vLLM's server) on 127.0.0.1: started, waited
    for until `probe_url` answers (an error with its log's tail if it exits or takes longer than `start_s`),
    and terminated - killed if it does not stop - on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            try:
                urllib.request.urlopen(probe_url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready within {start_s:.0f} s; log: "
                                       f"{log_path.read_text(errors='replace')[-3000:]}") from None
                time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # e.g. connections a proxy still holds open keep its threads busy
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_moto() -> str:
    """A real S3-compatible server (moto) on 127.0.0.1; returns its own endpoint (tests reach it through
    `s3_proxy`, whose endpoint `s3_server` sets in the environment)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with local_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                      endpoint + "/moto-api/", _SESSION_ROOT / "moto.log", "moto server"):
        yield endpoint


@pytest.fixture(scope="session")
def s3_proxy(s3_moto: str):
    """The TCP proxy in front of moto (tests/tcp_proxy.py): `s3_proxy.outage(30)` refuses connections for 30 s."""
    from tcp_proxy import TcpProxy

    return TcpProxy(int(s3_moto.rsplit(":", 1)[1]))


@pytest.fixture(scope="session")
def s3_server(s3_proxy) -> str:
    """The S3 endpoint of the tests (moto behind the proxy), set in the environment with moto's dummy credentials.

    Requested before the session's Ray so that Ray's workers inherit the endpoint and the test
    credentials (which are moto's dummies, not secrets).
    """
    endpoint = f"http://127.0.0.1:{s3_proxy.port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    return endpoint


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
    """One local Ray for the whole session (2 CPUs; its dashboard on 127.0.0.1 serves Ray's state API, which Ray
    Train's placement-group cleanup and the sweep driver use), shut down at the end."""
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


VLLM_SERVER_START_S = 240.0  # bounded wait for vLLM's server (about 26 s when the machine is idle)


@dataclass
class VLLMServer:
    url: str  # http://127.0.0.1:PORT (no /v1)
    served_model: str  # the first model name the server reports in /v1/models (the base model)
    models: list[str]  # every name it serves (the base model, then LoRA modules)
    log: Path


def http_get(url: str, key: str | None = None, timeout: float = 5.0) -> bytes:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return response.read()


@contextlib.contextmanager
def vllm_server(model: Path | str, log_path: Path, extra: Sequence[str] = (), key: str | None = None
                ) -> Iterator[VLLMServer]:
    """vLLM's OpenAI-compatible server on `model`, on 127.0.0.1, with the CPU flags reasonbed's vllm engine
    uses (eager, float32, no chunked prefill); `extra` arguments after them; terminated on exit."""
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
               "--no-enable-chunked-prefill", "--max-model-len", "1024", *extra]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}  # caches stay under the session's temp dir
    url = f"http://127.0.0.1:{port}"
    with local_server(command, url + "/health", log_path, "vLLM server", VLLM_SERVER_START_S, env):
        models = [entry["id"] for entry in json.loads(http_get(url + "/v1/models", key=key))["data"]]
        yield VLLMServer(url, models[0], models, log_path)


@pytest.fixture(scope="session")
def start_vllm_server():
    """`start_vllm_server(model, log_path, extra=(), key=None)`: the context manager `vllm_server` above."""
    return vllm_server


TRAINED_RUN = {  # a few steps of `direct` on the tiny model in this process: enough to change its answers
    "data": {"dataset": "synthetic_shapes", "images_per_class": 2}, "test_domain": "photo",
    # an image bound the run records and its export and predictions carry (above the 56-pixel images: none shrinks)
    "model": {"max_image_pixels": 112 * 112},
    "optim": {"batch_size": 4, "max_steps": 8, "lr": 1e-3, "warmup_ratio": 0.0},
    "eval": {"every": 0, "max_per_domain": 0}, "scale": {"backend": "local"},
}


@pytest.fixture(scope="session")
def trained_run(tiny_model_dir: Path) -> Path:  # noqa: ARG001 - the tiny model is built first, once
    """One small finished training run (local backend): its directory (config, metrics, selected.json, adapter)."""
    from reasonbed.config import load
    from reasonbed.train.config import TrainConfig
    from reasonbed.train.run import run

    cfg = load(TrainConfig, overrides=[f"run_dir={_SESSION_ROOT / 'trained-run'}"], base=TRAINED_RUN)
    return run(cfg).run_dir


@pytest.fixture(scope="session")
def exported_adapter(trained_run: Path) -> Path:
    """`reasonbed export` of `trained_run`: its chosen adapter with a model card."""
    from reasonbed.share.export import ExportConfig, export

    return export(ExportConfig(source=str(trained_run), out=str(_SESSION_ROOT / "exported-adapter")))
