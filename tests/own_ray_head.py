"""The slow tests' OWN Ray head: own temp dir and HOME, own ports, own process session, token auth.

Optionally with Ray's fake multi-node autoscaler (a config from `reasonbed.cli.cluster_files.fake_autoscaling_config`,
mirroring cluster/aws.yaml's worker groups); jobs are submitted to it with `ray job submit --runtime-env ...`. It
never runs `ray stop`: teardown signals only the processes of the session it started. Used by
tests/test_placement.py (job submission with cluster/runtime_env.yaml, autoscaling by node group),
tests/test_readme_headline.py and tests/test_multinode.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import SUITE_RAY_KNOBS, free_port

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() \
    else (shutil.which("ray") or "ray")
PYTHON = "python" if Path(sys.executable).with_name("python").exists() else sys.executable


def session_pids(sid: int) -> list[int]:
    """Processes of one session (the `ray start` we launched leads its own): ours and only ours."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


class OwnRayHead:
    """A Ray head in its own temp dir, ports and process session, with the fake autoscaler (if given a config)."""

    def __init__(self, root: Path, autoscaling_config: dict[str, Any] | None, head_cpus: int, gcs_port: int) -> None:
        self.root = root
        self.gcs_port = gcs_port
        self.dashboard_port = free_port()
        self.token = secrets.token_hex(16)
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        (root / "home").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({
            "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"), "RAY_TMPDIR": str(root / "ray"),
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
            "RAY_enable_autoscaler_v2": "0", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            # Every node, fake ones included, on the loopback address.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            **{key: os.environ[key] for key in SUITE_RAY_KNOBS if key in os.environ},  # tests/conftest.py
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        self.env = env
        self.command = [
            RAY_BIN, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
            f"--num-cpus={head_cpus}", "--num-gpus=0", "--object-store-memory=200000000",
            f"--temp-dir={root / 'ray'}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}", "--dashboard-agent-listen-port=0",
            "--disable-usage-stats",
        ]
        if autoscaling_config is not None:
            config_path = root / "autoscaling.json"
            config_path.write_text(json.dumps(autoscaling_config))
            env["RAY_FAKE_CLUSTER"] = "1"
            self.command.append(f"--autoscaling-config={config_path}")
        self.log_path = root / "head.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if any(n["state"] == "ALIVE" for n in self.nodes()):
                    return
            except OSError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"head not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def nodes(self) -> list[dict[str, Any]]:
        """Nodes from the state API (HTTP, bearer token): no ray.init in the test process."""
        request = urllib.request.Request(f"{self.dashboard_url}/api/v0/nodes?limit=100",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with _NO_PROXY.open(request, timeout=10) as response:
            return json.load(response)["data"]["result"]["result"]

    def alive_workers(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes() if n["state"] == "ALIVE" and not n.get("is_head_node")]

    def submit(self, *job_args: str, submission_id: str, runtime_env: str = "cluster/runtime_env.yaml",
               script: str = "jobs/cluster_check.py") -> subprocess.Popen[str]:
        """`ray job submit --runtime-env cluster/runtime_env.yaml -- python jobs/cluster_check.py ...`,
        run from the repository root as docs/cluster.md says."""
        command = [RAY_BIN, "job", "submit", "--address", self.dashboard_url, "--runtime-env", runtime_env,
                   "--submission-id", submission_id, "--", PYTHON, script, *job_args]
        return subprocess.Popen(command, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        sid = self.proc.pid
        # a test head: every process of its session at once (`ray start --block`, raylet, GCS, workers, fake
        # nodes), SIGTERM then SIGKILL; a graceful `--block` shutdown alone took about 50 s of teardown
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [p for p in session_pids(sid) if p != os.getpid()]
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                time.sleep(0.2)
                pids = [p for p in session_pids(sid) if p != os.getpid()]
            if not pids:
                break
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
