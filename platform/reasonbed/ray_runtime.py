"""The one place reasonbed starts or joins Ray, so every process gets the same runtime set-up.

`init_ray()` joins an existing cluster (RAY_ADDRESS, `ray job submit`) or starts a local one, and
always passes a runtime_env whose `worker_process_setup_hook` installs the torchvision import fix in
every Ray worker, with the environment variables vLLM needs inside Ray actors. Keep Ray API calls
that concern cluster start-up here, so a Ray version bump is a local change.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

SETUP_HOOK = "reasonbed.compat.torchvision_fix.install"

# Settings for vLLM inside Ray actors (see README: vLLM in Ray).
WORKER_ENV_DEFAULTS: dict[str, str] = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Variables forwarded from the driver to workers when set (cache locations, object-store endpoints, offline,
# the code version, the Hugging Face token for gated models). HF_TOKEN is taken from the driver's environment
# only and never logged or written by reasonbed; Ray keeps a job's runtime_env in its job table (the dashboard,
# on 127.0.0.1 with token auth, shows it): on a shared cluster give the nodes the token instead (a Kubernetes
# secret, the instance's environment) and leave it unset on the driver. HF_HOME on a volume shared by a node's
# pods keeps one copy of the weights per node (docs/cluster.md).
FORWARDED_ENV = (
    "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_CACHE_ROOT", "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_ENABLE_V1_MULTIPROCESSING", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "REASONBED_CACHE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT", "REASONBED_CODE_VERSION", "PYTHONPATH", "RAY_API_SERVER_ADDRESS",
)

log = logging.getLogger(__name__)


def worker_runtime_env(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A runtime_env with the setup hook and environment reasonbed's workers need."""
    env_vars = dict(WORKER_ENV_DEFAULTS)
    env_vars.update({name: os.environ[name] for name in FORWARDED_ENV if name in os.environ})
    runtime_env: dict[str, Any] = {"worker_process_setup_hook": SETUP_HOOK, "env_vars": env_vars}
    if extra:
        extra = dict(extra)
        env_vars.update(extra.pop("env_vars", {}) or {})
        runtime_env.update(extra)
    return runtime_env


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def submitted_job_runtime_env() -> dict[str, Any] | None:
    """The runtime_env of the submitted job this driver runs in (`ray job submit`), else None."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor for the driver
    return (json.loads(raw).get("runtime_env") or {}) if raw else None


def driver_runtime_env(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What init_ray passes: everything, or inside a submitted job only what the job's env lacks.

    Ray merges a driver's runtime_env with the job's field by field and refuses overlaps, so inside
    `ray job submit` the job's runtime_env wins and only missing keys and variables are added
    (PYTHONPATH, which names the submitting machine's paths, is never forwarded there).
    """
    runtime_env = worker_runtime_env(extra)
    job_env = submitted_job_runtime_env()
    if job_env is None:
        return runtime_env
    job_vars = job_env.get("env_vars") or {}
    env_vars = {key: value for key, value in runtime_env.pop("env_vars").items()
                if key not in job_vars and key != "PYTHONPATH"}
    runtime_env = {key: value for key, value in runtime_env.items() if key not in job_env}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    return runtime_env


def check_custom_resources(key: str, resources: Mapping[str, Any]) -> None:
    """Custom Ray resources a config asks for (a node group, e.g. train_node) must be named, positive amounts;
    CPUs and GPUs have their own keys. Raises `ConfigError` naming `key`."""
    from reasonbed.config import ConfigError

    for name, amount in resources.items():
        if name in ("CPU", "GPU", "memory") or not isinstance(amount, (int, float)) or isinstance(amount, bool) \
                or amount <= 0:
            raise ConfigError(f"{key}: {name}={amount!r} must be a custom resource (e.g. train_node, "
                              f"generation_node; CPUs and GPUs have their own keys) with an amount > 0")


def multi_node() -> str:
    """Why the joined Ray cluster is multi-node ("" when it is one machine): more than one alive node, or a
    node that offers no CPU (cluster/*.yaml's head: its work always lands on other nodes)."""
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    if len(alive) > 1:
        return f"{len(alive)} nodes"
    if any(not node.get("Resources", {}).get("CPU") for node in alive):
        return "its head offers no CPU, so workers run on other nodes"
    return ""


def init_ray(address: str | None = None, num_cpus: int | None = None, temp_dir: str | None = None,
             runtime_env: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """Start or join Ray with reasonbed's runtime_env; returns Ray's context (idempotent)."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    extra = dict(runtime_env or {})
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and kwargs.get("include_dashboard", True):
        # Pin the dashboard port and tell every worker where it is: Ray Train's placement-group
        # cleaner finds the state API by scanning the machine's Ray processes and gives up when
        # more than one Ray runs here, leaving a stopped trial's placement group allocated.
        port = int(kwargs.pop("dashboard_port", 0) or _free_port())
        kwargs["dashboard_port"] = port
        api = f"http://127.0.0.1:{port}"
        os.environ["RAY_API_SERVER_ADDRESS"] = api
        extra["env_vars"] = {**(extra.get("env_vars") or {}), "RAY_API_SERVER_ADDRESS": api}
    if address and address not in ("auto", "local") and not os.environ.get("RAY_API_SERVER_ADDRESS"):
        # Joining a cluster (RAY_ADDRESS, `ray job submit`): name it to the workers for the same reason.
        extra["env_vars"] = {**(extra.get("env_vars") or {}), "RAY_ADDRESS": address}
    options: dict[str, Any] = {"runtime_env": driver_runtime_env(extra), "log_to_driver": True}
    if address:
        options["address"] = address
    else:
        # The dashboard (bound to 127.0.0.1) serves Ray's state API, which Ray Train uses to clean up
        # the placement groups of stopped runs: without it a stopped Tune trial can starve the next.
        options["include_dashboard"] = kwargs.pop("include_dashboard", True)
        options["dashboard_host"] = kwargs.pop("dashboard_host", "127.0.0.1")
        if num_cpus is not None:
            options["num_cpus"] = num_cpus
        temp_dir = temp_dir or os.environ.get("RAY_TMPDIR")
        if temp_dir:
            options["_temp_dir"] = temp_dir
    options.update(kwargs)
    log.info("starting Ray (%s)", "address=" + address if address else "local")
    return ray.init(**options)


def release_placement_groups() -> int:
    """Remove the placement groups this driver's job created that are still held; returns how many.

    Ray Train reserves each run's workers in a placement group, and its cleaner actor frees it when the
    run's controller dies; a sweep stopped mid-trial (Ctrl+C, `ray job stop`) can leave some held, which
    would starve the next job on the cluster. A placement group's id ends with its creator job's id, so
    only this job's are touched.
    """
    import ray

    if not ray.is_initialized():
        return 0
    released = _remove_held_placement_groups({ray.get_runtime_context().get_job_id()})
    if released:
        log.info("released %d placement group(s) this job still held", released)
    return released


def _remove_held_placement_groups(jobs: set[str]) -> int:
    """Remove the CREATED placement groups whose creator job is one of `jobs` (a group's id ends with its
    creator job's id); returns how many."""
    import ray

    released = 0
    for pg_id, entry in ray.util.placement_group_table().items():
        if entry.get("state") == "CREATED" and any(pg_id.endswith(job) for job in jobs):
            _remove_placement_group(pg_id)
            released += 1
    return released


def _remove_placement_group(hex_id: str) -> None:
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(hex_id))))


def release_orphaned_placement_groups() -> int:
    """Remove the placement groups a dead job left held (a driver killed or stopped while Ray Train was
    starting a worker group); returns how many.

    Ray Train's cleaner actor should free a run's placement group once the run's controller is gone; when the
    driver is killed or stopped at the wrong moment it does not, and the held CPUs starve every later run: a
    resumed sweep then waits forever for its first worker group. Only groups nobody can use any more are
    touched: held (CREATED), not detached, created by a job that is dead and has no actor alive but Ray
    Train's cleaner (so a detached actor of a finished job keeps its groups on a shared cluster).
    """
    import ray
    import ray._private.state  # Ray 2.60: the GCS job table (dead or alive) has no public accessor
    from ray.util.state import list_actors, list_placement_groups

    if not ray.is_initialized():
        return 0
    dead_jobs = {job["JobID"] for job in ray._private.state.jobs() if job.get("IsDead")}
    alive = list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False)
    held = list_placement_groups(filters=[("state", "=", "CREATED")], detail=True, limit=10_000,
                                 raise_on_missing_output=False)
    orphans = orphaned_groups(held, dead_jobs, alive)
    for group_id in orphans:
        _remove_placement_group(group_id)
    if orphans:
        log.warning("released %d placement group(s) that dead jobs left held", len(orphans))
    return len(orphans)


def orphaned_groups(held: Iterable[Any], dead_jobs: set[str], alive_actors: Iterable[Any]) -> list[str]:
    """The ids of the held placement groups (Ray's state API rows) that no one can use any more: not
    detached, created by a dead job none of whose actors is alive but Ray Train's placement-group cleaner."""
    using = {actor.job_id for actor in alive_actors if actor.class_name != "PlacementGroupCleaner"}
    return [group.placement_group_id for group in held
            if group.creator_job_id in dead_jobs - using and not group.is_detached]


def report_to_tune_trial(metrics: Mapping[str, Any]) -> bool:
    """Report `metrics` to Ray Tune when this process runs a Tune trial's function (an in-process training run
    in a sweep); False, and nothing reported, anywhere else (a Ray Train worker, a plain process)."""
    import sys

    if "ray" not in sys.modules:
        return False
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session  # Ray 2.60: no public check

    if not _in_tune_session():
        return False
    from ray import tune

    tune.report(dict(metrics))
    return True
