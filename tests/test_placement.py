"""Placement (issue 12, item 4): trainers request the training node group, engine actors the generation group.

One mechanism everywhere: the custom resources the cluster configs define (`train_node`, `generation_node`:
cluster/aws.yaml, cluster/gcp.yaml, cluster/kuberay/), asked for by `scale.resources` (Ray Train workers),
`engine.resources` (generation and evaluation engine actors), `scale.engine_resources` (the engine actors a
training run starts: SARR's self-chain engines, GRPO's vLLM rollout actor, plus GRPO's
`method_config.rollout_resources`). The fast tests check that
each key reaches Ray; the slow test runs Ray's real autoscaler with the fake multi-node provider mirroring
cluster/aws.yaml (tests/own_ray_head.py): a job submitted with cluster/runtime_env.yaml runs as
documented, a generation job scales up the generation group only, a training job the training group only,
and idle nodes are removed again.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import RANDOM_MODEL, free_port, short_temp_dir
from own_ray_head import REPO, OwnRayHead
from reasonbed.cli import cluster_files as rc
from reasonbed.config import ConfigError, load
from reasonbed.inference.base import EngineConfig
from reasonbed.ray_runtime import SETUP_HOOK
from reasonbed.train.config import TrainConfig

CONFIGS = REPO / "configs"
CHECK_MARKER = "cluster_check:"  # jobs/cluster_check.py's summary line


def test_resource_keys_are_checked_and_reach_ray(tmp_path: Path) -> None:
    from reasonbed.train.driver import build_trainer
    from reasonbed.train.rundir import RunDir

    cfg = load(TrainConfig, overrides=[f"run_dir={tmp_path}", "scale.resources={train_node: 1}"])
    trainer = build_trainer(cfg, {}, RunDir(cfg))
    assert trainer.scaling_config.resources_per_worker == {"CPU": 1.0, "train_node": 1}
    engine = EngineConfig(name="template", num_gpus=1, resources={"generation_node": 1})
    assert engine.actor_options() == {"num_cpus": 1.0, "num_gpus": 1, "resources": {"generation_node": 1}}
    assert EngineConfig(name="template").actor_options() == {"num_cpus": 1.0, "num_gpus": None}
    for bad in ("scale.resources={GPU: 1}", "scale.resources={train_node: 0}", "scale.resources={train_node: x}"):
        with pytest.raises(ConfigError, match="scale.resources"):
            load(TrainConfig, overrides=[bad])
    with pytest.raises(ConfigError, match="engine.resources"):
        EngineConfig(resources={"CPU": 2})
    with pytest.raises(ConfigError, match="scale.engine_resources"):
        load(TrainConfig, overrides=["scale.engine_resources={generation_node: -1}"])


def test_example_configs_place_work_on_the_node_groups() -> None:
    """The GPU configs ask for the groups cluster/*.yaml define, one unit per GPU as the nodes offer them."""
    train = yaml.safe_load((CONFIGS / "train_qwen2_5_vl_7b.yaml").read_text())
    sweep = yaml.safe_load((CONFIGS / "tune_pacs_internvl3_8b.yaml").read_text())
    generate = yaml.safe_load((CONFIGS / "generate_pacs_qwen2_5_vl_7b.yaml").read_text())
    assert train["scale"]["resources"] == {rc.TRAIN_RESOURCE: 1}
    assert sweep["train"]["scale"]["resources"] == {rc.TRAIN_RESOURCE: 1}
    assert sweep["train"]["scale"]["engine_resources"] == {rc.GENERATION_RESOURCE: 1}
    assert generate["engine"]["resources"] == {rc.GENERATION_RESOURCE: generate["engine"]["num_gpus"]}


# ------------------------------------------------------------------------- the fake autoscaler (slow)


@pytest.fixture(scope="module")
def autoscaling_head() -> Iterator[OwnRayHead]:
    """An own head with the fake autoscaler mirroring cluster/aws.yaml's groups, one 1-CPU node per group at most."""
    root = short_temp_dir("rbpl-")
    gcs_port = free_port()
    config = rc.fake_autoscaling_config(rc.load_yaml(REPO / "cluster" / "aws.yaml"),
                                        gcs_address=f"127.0.0.1:{gcs_port}", head_resources={"CPU": 2},
                                        worker_cpus=1, max_workers_per_type=1, idle_timeout_minutes=0.1)
    head = OwnRayHead(root, config, head_cpus=2, gcs_port=gcs_port)
    try:
        head.start()
        yield head
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)


def _no_workers_within(head: OwnRayHead, seconds: float) -> bool:
    """Waits until the autoscaler has removed every (idle) fake node, up to `seconds`."""
    deadline = time.monotonic() + seconds
    while head.alive_workers() and time.monotonic() < deadline:
        time.sleep(0.5)
    return not head.alive_workers()


def _submit_and_watch(head: OwnRayHead, script: str, *args: str, submission_id: str) -> tuple[str, set[str]]:
    """Submit a job (runtime_env without working_dir: fake nodes share one session directory); returns its
    output and the node types the autoscaler launched for it, once it has removed them again as idle."""
    assert _no_workers_within(head, 120), "idle nodes of an earlier job were not removed"
    submitted = time.time()  # launches are told apart by time: monitor.log* files are rotated, their order unknown
    runtime_env = rc.load_runtime_env()
    del runtime_env["working_dir"]
    runtime_env["py_modules"] = [str(REPO / module) for module in runtime_env["py_modules"]]
    env_file = head.root / f"runtime_env.{submission_id}.yaml"
    env_file.write_text(yaml.safe_dump(runtime_env))
    proc = head.submit(*args, submission_id=submission_id, runtime_env=str(env_file), script=str(REPO / script))
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-5000:]
    assert _no_workers_within(head, 120), "idle fake nodes were not removed (idle timeout 6 s)"
    events = _monitor_events(head)
    launched = {node_type for asked, node_type in events["launch"] if asked >= submitted}
    removed = [node for ended, node in events["idle_terminate"] if ended >= submitted]
    assert len(removed) >= len(launched), events
    return output, launched


@pytest.mark.slow
def test_jobs_on_an_autoscaling_head_run_with_the_runtime_env_and_scale_their_own_group_only(
        autoscaling_head: OwnRayHead) -> None:
    """One own head with the fake autoscaler: `ray job submit --runtime-env cluster/runtime_env.yaml` runs
    jobs/cluster_check.py as docs/cluster.md says (setup hook, torchvision, the shipped package, the env vars);
    a generation job scales up the generation group only, a training job the training group only, and the
    autoscaler removes each idle node again."""
    proc = autoscaling_head.submit("--smoke-test", submission_id="cluster-check-smoke")  # head only: no fake node
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-4000:]
    summary = _summary(output)
    assert summary["ok"] and summary["errors"] == []
    assert summary["driver_runtime_env"]["worker_process_setup_hook"] == SETUP_HOOK
    assert {"working_dir", "py_modules", "env_vars"} <= set(summary["driver_runtime_env"]["fields"])
    for task in summary["tasks"]:
        assert task["setup_hook_active"] and task["torchvision"]  # torchvision importable via the hook
        assert task["platform_system"] and "/platform/platform" not in task["platform_file"]
        # The package shipped with py_modules shadows the installed one; workers run in working_dir.
        assert "runtime_resources" in task["reasonbed_file"] and "runtime_resources" in task["cwd"]
        assert task["env"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        assert task["env"]["TOKENIZERS_PARALLELISM"] == "false"

    output, launched = _submit_and_watch(
        autoscaling_head, "jobs/generate_reasoning.py", "--smoke-test", "engine.name=template",
        "engine.resources={generation_node: 1}", "data.images_per_class=2", submission_id="placement-generate")
    assert "== template teacher" in output
    assert launched == {"generation_1gpu"}, launched

    output, launched = _submit_and_watch(
        autoscaling_head, "jobs/train.py", "--smoke-test", "--method", "direct", "scale.resources={train_node: 1}",
        "data.images_per_class=2", "optim.batch_size=4", "optim.max_steps=2", "eval.every=0",
        "eval.max_per_domain=1", RANDOM_MODEL, submission_id="placement-train")
    assert '"step": 2' in output
    assert launched == {"train_8gpu"}, launched


# ------------------------------------------------------------------- reading the head's logs and jobs

_LOG_TIME = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"


def _monitor_events(head: OwnRayHead) -> dict[str, list[tuple[float, str]]]:
    """Autoscaler decisions from monitor.log as (unix time, node type or id): launches and idle removals."""
    def stamp(text: str) -> float:
        return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    events: dict[str, list[tuple[float, str]]] = {"launch": [], "idle_terminate": []}
    asked: dict[str, float] = {}  # launcher thread -> when it got its launch request
    for log in (head.root / "ray" / "session_latest" / "logs").glob("monitor.log*"):
        for line in log.read_text(errors="replace").splitlines():
            if m := re.search(_LOG_TIME + r".*NodeLauncher(\d+): Got \d+ nodes to launch", line):
                asked[m[2]] = stamp(m[1])
            elif m := re.search(_LOG_TIME + r".*NodeLauncher(\d+): Launching \d+ nodes, type (\S+)\.", line):
                events["launch"].append((asked.pop(m[2], stamp(m[1])), m[3]))  # logged once created
            elif m := re.search(_LOG_TIME + r".*Terminating the node with id (\S+) .*\(idle\)", line):
                events["idle_terminate"].append((stamp(m[1]), m[2]))
    return events


def _summary(output: str) -> dict[str, Any]:
    """The JSON summary jobs/cluster_check.py prints after CHECK_MARKER."""
    for line in output.splitlines():
        if CHECK_MARKER in line:
            return json.loads(line.split(CHECK_MARKER, 1)[1])
    raise AssertionError(f"no '{CHECK_MARKER}' line in the job output:\n{output[-4000:]}")
