"""Multi-node storage (issue 12, item 3): adapters and checkpoints travel through the run's storage.

A local two-node Ray cluster: a head (2 CPUs) and a second raylet with its own temp dir and working
dir that alone offers the custom resource `train_node`, so `scale.resources={train_node: 1}` pins the
Ray Train workers there (the placement mechanism of item 4). The driver runs in a private mount
namespace (`unshare`) whose run directory is a tmpfs nobody else sees: no Ray worker, on either node,
can read a file the driver wrote. A SARR run started from an `init_adapter` that exists only on the driver's
disk (MTCT from that adapter, then one self-chain round whose engine and whose next stage load the previous
stage's adapter) must finish with every adapter read from storage (moto S3 on loopback, tests/conftest.py). A
run with node-local storage on the same cluster is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RANDOM_MODEL, free_port, save_random_adapter, short_temp_dir
from own_ray_head import OwnRayHead, session_pids
from reasonbed.models.configs import ModelConfig

REPO = Path(__file__).resolve().parents[1]
# `ray start` (the CLI's main) with loopback addresses kept as given.
LOOPBACK_RAY_START = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
                      "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")


def _private_mount_prefix() -> list[str] | None:
    """`unshare` arguments giving a process its own mount namespace (root, or an unprivileged user namespace)."""
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    with tempfile.TemporaryDirectory() as target:
        for prefix in ([unshare, "--mount", "--propagation", "private"],
                       [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"]):
            probe = subprocess.run([*prefix, "mount", "-t", "tmpfs", "tmpfs", target], capture_output=True)
            if probe.returncode == 0:
                return prefix
    return None


class WorkerRaylet:
    """A second raylet joining `head`: its own temp dir, working dir, HOME and process session."""

    def __init__(self, head: OwnRayHead, root: Path, resources: dict[str, float], cpus: int = 1) -> None:
        self.root = root
        for name in ("tmp", "home", "cwd"):
            (root / name).mkdir(parents=True, exist_ok=True)
        # OwnRayHead's env sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (everything on loopback), which also forbids
        # `ray start --address`; with it on, `ray start` replaces 127.0.0.1 by the machine's address, where the
        # head does not listen. So: on, and `ray start` run with that replacement turned off (loopback only).
        self.env = {**head.env, "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
        self.command = [sys.executable, "-c", LOOPBACK_RAY_START, "start", "--block",
                        f"--address=127.0.0.1:{head.gcs_port}",
                        "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
                        f"--resources={json.dumps(resources)}", f"--temp-dir={root / 'ray'}",
                        "--object-store-memory=150000000", "--disable-usage-stats"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, head: OwnRayHead, resource: str, timeout: float = 120.0) -> None:
        with open(self.root / "raylet.log", "wb") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, cwd=self.root / "cwd", stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "raylet.log").read_text()[-3000:])
            try:  # the head's dashboard may reset a connection while the new node registers
                if any(resource in n.get("resources_total", {}) for n in head.alive_workers()):
                    return
            except OSError:
                pass
            time.sleep(1.0)
        raise TimeoutError("the second raylet did not join")

    def stop(self) -> None:
        if self.proc is None:
            return
        sid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        for pid in [p for p in session_pids(sid) if p != os.getpid()]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def two_nodes(s3_server: str) -> Iterator[tuple[OwnRayHead, Path]]:  # noqa: ARG001 - raylets inherit the S3 env
    root = short_temp_dir("rbmn-")
    head = OwnRayHead(root / "h", None, head_cpus=2, gcs_port=free_port())
    worker = WorkerRaylet(head, root / "w", {"train_node": 1})
    try:
        head.start()
        worker.start(head, "train_node")
        yield head, root
    finally:
        worker.stop()
        head.stop()
        shutil.rmtree(root, ignore_errors=True)


def _train(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, str(REPO / "jobs" / "train.py"), *args])


@pytest.mark.slow
def test_sarr_from_a_driver_only_init_adapter_reads_every_adapter_from_storage(two_nodes, s3_bucket: str,
                                                                               tmp_path: Path) -> None:
    import s3fs

    prefix = _private_mount_prefix()
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare): the driver's disk cannot be hidden")
    head, root = two_nodes
    from reasonbed.data.catalog import DataConfig, offline_root

    fs = s3fs.S3FileSystem()
    fs.put(offline_root(DataConfig(images_per_class=2)) + "/", f"{s3_bucket}/mn-shapes", recursive=True)
    given = tmp_path / "given"  # moved onto the driver's private disk by the script, then gone from the host
    save_random_adapter(given, ModelConfig(tiny_pretrained=False), seed=3, std=0.01)  # any adapter of the layout
    given_bytes = (given / "adapter_model.safetensors").read_bytes()
    private = root / "driver"  # an empty directory on the host; the driver sees a tmpfs here
    private.mkdir()
    out = tmp_path / "out"  # what the driver copies out for the assertions
    out.mkdir()
    common = ["--smoke-test", f"data.root=s3://{s3_bucket}/mn-shapes", "data.images_per_class=2",
              "scale.resources={train_node: 1}", "optim.batch_size=4", "optim.max_steps=2", "eval.every=0",
              "eval.max_per_domain=1", "eval.reasoning_max_tokens=8", "test_domain=photo",
              RANDOM_MODEL]  # storage, not learning: runs while the pretrained model builds
    storage = f"s3://{s3_bucket}/mn-runs"
    script = "\n".join([
        "set -e",
        f'mount -t tmpfs tmpfs {shlex.quote(str(private))}',
        f"cp -r {shlex.quote(str(given))} {private}/init && rm -r {shlex.quote(str(given))}",
        _train("--method", "sarr", *common, f"run_dir={private}/sarr", f"storage_path={storage}",
               f"init_adapter={private}/init", "method_config.rounds=1", "method_config.engine=hf",
               "method_config.candidates=1", "method_config.max_tokens=16", "method_config.epochs_per_round=0.1"),
        f"cp {private}/sarr/sarr_rounds.jsonl {private}/sarr/metrics.jsonl {out}/",
        # node-local storage on a multi-node cluster: refused before anything is written
        _train("--method", "direct", *common, f"run_dir={private}/local", f"storage_path={private}/ray")
        + f" 2> {out}/local.err || echo $? > {out}/local.code",
        f"test ! -e {private}/local/config.yaml && touch {out}/local.nothing-written",
    ])
    env = {**head.env, "RAY_ADDRESS": f"127.0.0.1:{head.gcs_port}", "PYTHONPATH": str(REPO / "platform"),
           "RAY_API_SERVER_ADDRESS": head.dashboard_url}
    proc = subprocess.run([*prefix, "sh", "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    # The isolation was real: the driver's files are not on the host, the workers' diagnostics (written to the
    # same path from the second node) are; the given adapter was only ever on the driver's disk during the run.
    assert not (private / "sarr" / "config.yaml").exists() and not given.exists()
    assert list(private.glob("sarr/round*/replicas/rank0.sha256")), sorted(str(p) for p in private.rglob("*"))
    rounds = [json.loads(line) for line in (out / "sarr_rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1]
    # Stage 0 started from the adapter the driver staged into its storage (the same bytes it was given), stage 1
    # from stage 0's final checkpoint in storage.
    staged = [p for p in fs.glob(f"{s3_bucket}/mn-runs/*/init_adapter/adapter_model.safetensors")]
    assert len(staged) == 1 and "round0" in staged[0], staged
    assert fs.cat(staged[0]) == given_bytes
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["round"] == 1 and metrics[-1]["global_step"] > 2, metrics  # round 1 trained after stage 0
    assert (out / "local.code").read_text().strip() == "2"
    err = (out / "local.err").read_text()
    assert "is on the driver's disk, but the Ray cluster is multi-node (2 nodes)" in err and "s3://" in err, err
    assert (out / "local.nothing-written").exists()
