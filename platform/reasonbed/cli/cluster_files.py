"""Cluster configs as data: load and check the launcher YAMLs, the KubeRay manifests and the runtime_env.

Used by `reasonbed cluster-check --configs cluster` (`check_directory`) and by tests/test_cluster.py.
The files live in the repository's `cluster/` folder (`aws.yaml`, `gcp.yaml`, `kuberay/*.yaml`,
`runtime_env.yaml`); this module reads them and checks them with Ray's own machinery, so a Ray
version bump that changes a schema shows up as a failing check rather than as a failed `ray up`:

- `validate_launcher_config` runs Ray's `prepare_config` + `validate_config` (the JSON schema
  `ray/autoscaler/ray-schema.json` shipped in the wheel, plus Ray's cross-field checks).
- `fake_autoscaling_config` turns a launcher config into a config for Ray's fake multi-node provider
  (`provider.type: fake_multinode`): same worker node types and custom resources, scaled down to a
  laptop, so the real autoscaler can be exercised on one machine (`RAY_FAKE_CLUSTER=1 ray start
  --head --autoscaling-config=...`). The wheel ships no `fake_multi_node/example.yaml`, hence this.
- `raycluster_autoscaling_config` runs the translation the Ray autoscaler performs inside a KubeRay
  head pod (RayCluster spec -> autoscaling config) and validates the result.
- `kuberay_problems` checks a RayCluster / RayJob manifest against the fields KubeRay's `ray.io/v1`
  CRDs require (`KUBERAY_REQUIRED_FIELDS`, taken from KubeRay's API types; no CRD schema for KubeRay
  is published on the package registries this project can reach).
- `load_runtime_env` reads `cluster/runtime_env.yaml` and validates it as a Ray `RuntimeEnv`.
- `check_directory` runs all of these over a `cluster/` folder and lists the problems.

Ray imports happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# Custom resources that steer work onto the right GPU nodes: one unit per GPU on a node type.
# Trainers ask for {"GPU": 1, "train_node": 1} per worker, vLLM engines for {"GPU": 1, "generation_node": 1}.
TRAIN_RESOURCE = "train_node"
GENERATION_RESOURCE = "generation_node"
NODE_ROLE_RESOURCES = (TRAIN_RESOURCE, GENERATION_RESOURCE)

# Resource names Ray or the providers define; everything else in a node type's resources is custom.
STANDARD_RESOURCES = frozenset({"CPU", "GPU", "TPU", "memory", "object_store_memory"})

# The fake provider always names the head node type like this (FAKE_HEAD_NODE_TYPE in Ray).
FAKE_HEAD_NODE_TYPE = "ray.head.default"

# Fields KubeRay's ray.io/v1 API requires (JSON fields without `omitempty` in
# ray-operator/apis/ray/v1/{raycluster,rayjob}_types.go), plus the ones the in-tree autoscaler and
# this project rely on. `rayStartParams` is required up to KubeRay 1.3 and optional later: we always
# set it, so the manifests work on both.
KUBERAY_API_VERSION = "ray.io/v1"
KUBERAY_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "RayCluster": ("metadata.name", "spec.headGroupSpec", "spec.rayVersion", "spec.enableInTreeAutoscaling"),
    "RayJob": ("metadata.name", "spec.entrypoint", "spec.rayClusterSpec", "spec.runtimeEnvYAML"),
    "headGroupSpec": ("rayStartParams", "template.spec.containers"),
    "workerGroupSpec": ("groupName", "minReplicas", "maxReplicas", "rayStartParams", "template.spec.containers"),
    "container": ("name", "image"),
}
KUBERAY_ENUMS: dict[str, tuple[str, ...]] = {
    "upscalingMode": ("Default", "Aggressive", "Conservative"),
    "submissionMode": ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"),
}


def repo_root() -> Path:
    """The repository root (holding `cluster/`) for a source checkout, else the working directory."""
    here = Path(__file__).resolve().parents[3]
    return here if (here / "cluster").is_dir() else Path.cwd()


def cluster_dir() -> Path:
    """The `cluster/` folder of the repository."""
    return repo_root() / "cluster"


def load_yaml(path: str | Path) -> Any:
    """One YAML document."""
    with open(path) as f:
        return yaml.safe_load(f)


def load_yaml_documents(path: str | Path) -> list[Any]:
    """All YAML documents of a file, empty ones dropped."""
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


# ----------------------------------------------------------------------------------------- launcher


def validate_launcher_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in Ray's provider defaults and validate against Ray's schema; returns the prepared config.

    Raises `jsonschema.ValidationError` for unknown or mistyped fields and `ValueError` for Ray's
    cross-field checks (unknown head node type, min workers above max, ...).
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(dict(config)))
    validate_config(prepared)
    return prepared


def custom_resources(node_type: Mapping[str, Any]) -> dict[str, float]:
    """The custom (non-standard) resources a launcher node type advertises."""
    return {k: v for k, v in (node_type.get("resources") or {}).items() if k not in STANDARD_RESOURCES}


def worker_node_types(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The launcher config's node types other than the head's."""
    head = config.get("head_node_type")
    return {name: dict(spec) for name, spec in (config.get("available_node_types") or {}).items() if name != head}


def fake_autoscaling_config(launcher_config: Mapping[str, Any], *, gcs_address: str,
                            head_resources: Mapping[str, float] | None = None, worker_cpus: int = 1,
                            max_workers_per_type: int = 2, idle_timeout_minutes: float = 0.1,
                            object_store_memory: int = 128 * 1024 * 1024,
                            cluster_name: str = "reasonbed-fake") -> dict[str, Any]:
    """A `fake_multinode` autoscaling config that mirrors the launcher config's worker node types.

    Each worker type keeps its name and custom resources (`train_node`, `generation_node`, ...) but
    gets `worker_cpus` CPUs, no GPUs, a small object store, `min_workers` 0 and at most
    `max_workers_per_type` nodes. `gcs_address` must be the head's GCS address (`ip:port`): the fake
    provider starts its worker nodes in-process and joins them there (its default is port 6379).
    Use the result with `RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=<file>`.
    """
    from ray.autoscaler._private.util import validate_config

    node_types: dict[str, Any] = {
        FAKE_HEAD_NODE_TYPE: {"resources": dict(head_resources or {"CPU": 1}), "node_config": {}, "max_workers": 0},
    }
    for name, spec in worker_node_types(launcher_config).items():
        resources: dict[str, Any] = {"CPU": worker_cpus, "object_store_memory": object_store_memory}
        resources.update({k: int(v) for k, v in custom_resources(spec).items()})
        node_types[name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": 0,
            "max_workers": max(0, min(int(spec.get("max_workers", max_workers_per_type)), max_workers_per_type)),
        }
    config: dict[str, Any] = {
        "cluster_name": cluster_name,
        "max_workers": sum(t.get("max_workers", 0) for t in node_types.values()),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": node_types,
        "head_node_type": FAKE_HEAD_NODE_TYPE,
        "auth": {},
        "upscaling_speed": float(launcher_config.get("upscaling_speed", 1.0)),
        "idle_timeout_minutes": idle_timeout_minutes,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }
    validate_config(config)
    return config


# ------------------------------------------------------------------------------------ runtime_env


def _is_uri(value: str) -> bool:
    return "://" in value


def validate_runtime_env(runtime_env: Mapping[str, Any], base: str | Path | None = None,
                         plugins: Iterable[str] = ()) -> None:
    """Validate with Ray's `RuntimeEnv`, local `working_dir` / `py_modules` paths taken relative to
    `base`; with `base=None` local paths are only checked to be strings (they may name a path inside
    a container image). Raises on bad values and on fields Ray does not know: Ray itself accepts
    those as runtime_env plugin names, so a typo would only fail on the cluster (list real plugins
    in `plugins`).
    """
    from ray.runtime_env import RuntimeEnv

    unknown = set(runtime_env) - set(RuntimeEnv.known_fields) - set(plugins)
    if unknown:
        raise ValueError(f"unknown runtime_env fields {sorted(unknown)}; known: {sorted(RuntimeEnv.known_fields)}")
    env = copy.deepcopy(dict(runtime_env))
    wd, modules = env.pop("working_dir", None), env.pop("py_modules", None)
    if wd is not None and not isinstance(wd, str):
        raise ValueError(f"working_dir must be a string, got {wd!r}")
    if modules is not None and not (isinstance(modules, list) and all(isinstance(m, str) for m in modules)):
        raise ValueError(f"py_modules must be a list of strings, got {modules!r}")
    if base is not None:
        def resolve(value: str) -> str:
            return value if _is_uri(value) else str((Path(base) / value).resolve())

        if wd is not None:
            env["working_dir"] = resolve(wd)
        if modules is not None:
            env["py_modules"] = [resolve(m) for m in modules]
    RuntimeEnv(**env)


def load_runtime_env(path: str | Path | None = None, base: str | Path | None = None) -> dict[str, Any]:
    """`cluster/runtime_env.yaml` (or `path`) as a dict, validated by Ray's `RuntimeEnv`.

    The returned dict keeps relative `working_dir` / `py_modules` paths: `ray job submit` resolves
    them against the directory it runs in (the repository root, also the default `base` here).
    """
    data = load_yaml(path or cluster_dir() / "runtime_env.yaml")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a runtime_env must be a mapping, got {type(data).__name__}")
    validate_runtime_env(data, base=base or repo_root())
    return data


# ---------------------------------------------------------------------------------------- KubeRay


def _get(doc: Any, dotted: str) -> Any:
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _missing(doc: Any, fields: Iterable[str], where: str) -> list[str]:
    return [f"{where}: missing {field}" for field in fields if _get(doc, field) is None]


def _check_group(group: Mapping[str, Any], kind: str, where: str) -> list[str]:
    problems = _missing(group, KUBERAY_REQUIRED_FIELDS[kind], where)
    containers = _get(group, "template.spec.containers") or []
    if not isinstance(containers, list) or not containers:
        problems.append(f"{where}: template.spec.containers must be a non-empty list")
        return problems
    for i, container in enumerate(containers):
        problems += _missing(container, KUBERAY_REQUIRED_FIELDS["container"], f"{where}.containers[{i}]")
    params = group.get("rayStartParams") or {}
    if not all(isinstance(v, str) for v in params.values()):
        problems.append(f"{where}: rayStartParams values must be strings")
    if kind == "workerGroupSpec":
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if isinstance(low, int) and isinstance(high, int):
            if not 0 <= low <= high:
                problems.append(f"{where}: need 0 <= minReplicas <= maxReplicas, got {low}, {high}")
            replicas = group.get("replicas", low)
            if not low <= replicas <= high:
                problems.append(f"{where}: replicas {replicas} outside [{low}, {high}]")
        else:
            problems.append(f"{where}: minReplicas and maxReplicas must be integers")
    return problems


def raycluster_spec_problems(spec: Mapping[str, Any], where: str = "spec") -> list[str]:
    """Problems of a RayCluster spec (also the `rayClusterSpec` of a RayJob)."""
    problems = _check_group(spec.get("headGroupSpec") or {}, "headGroupSpec", f"{where}.headGroupSpec")
    names = []
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        names.append(group.get("groupName"))
        problems += _check_group(group, "workerGroupSpec", f"{where}.workerGroupSpecs[{i}]")
    if len(names) != len(set(names)):
        problems.append(f"{where}: duplicate groupName in {names}")
    mode = _get(spec, "autoscalerOptions.upscalingMode")
    if mode is not None and mode not in KUBERAY_ENUMS["upscalingMode"]:
        problems.append(f"{where}.autoscalerOptions.upscalingMode {mode!r} not in {KUBERAY_ENUMS['upscalingMode']}")
    idle = _get(spec, "autoscalerOptions.idleTimeoutSeconds")
    if idle is not None and not (isinstance(idle, int) and idle > 0):
        problems.append(f"{where}.autoscalerOptions.idleTimeoutSeconds must be a positive integer")
    return problems


def kuberay_problems(doc: Mapping[str, Any]) -> list[str]:
    """Problems of one KubeRay manifest (RayCluster or RayJob); an empty list means it passes."""
    kind = doc.get("kind")
    if doc.get("apiVersion") != KUBERAY_API_VERSION:
        return [f"apiVersion must be {KUBERAY_API_VERSION}, got {doc.get('apiVersion')!r}"]
    if kind not in ("RayCluster", "RayJob"):
        return [f"kind must be RayCluster or RayJob, got {kind!r}"]
    problems = _missing(doc, KUBERAY_REQUIRED_FIELDS[kind], kind)
    name = _get(doc, "metadata.name")
    if isinstance(name, str) and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 label")
    if kind == "RayCluster":
        problems += raycluster_spec_problems(doc.get("spec") or {}, "spec")
    else:
        spec = doc.get("spec") or {}
        if spec.get("rayClusterSpec"):
            problems += raycluster_spec_problems(spec["rayClusterSpec"], "spec.rayClusterSpec")
        mode = spec.get("submissionMode")
        if mode is not None and mode not in KUBERAY_ENUMS["submissionMode"]:
            problems.append(f"spec.submissionMode {mode!r} not in {KUBERAY_ENUMS['submissionMode']}")
        for field in ("shutdownAfterJobFinishes", "suspend"):
            if field in spec and not isinstance(spec[field], bool):
                problems.append(f"spec.{field} must be a boolean")
        for field in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
            if field in spec and not (isinstance(spec[field], int) and spec[field] >= 0):
                problems.append(f"spec.{field} must be a non-negative integer")
        if isinstance(spec.get("runtimeEnvYAML"), str):
            try:  # working_dir may be a path inside the image: checked as a string only
                validate_runtime_env(yaml.safe_load(spec["runtimeEnvYAML"]) or {}, base=None)
            except Exception as e:  # noqa: BLE001 - report any parse or validation error
                problems.append(f"spec.runtimeEnvYAML is not a valid runtime_env: {e}")
    return problems


def raycluster_autoscaling_config(spec: Mapping[str, Any], name: str = "reasonbed",
                                  namespace: str = "default") -> dict[str, Any]:
    """The autoscaling config the Ray autoscaler derives from a RayCluster spec (validated by Ray)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    ray_cr = {"metadata": {"name": name, "namespace": namespace}, "spec": copy.deepcopy(dict(spec))}
    return _derive_autoscaling_config_from_ray_cr(ray_cr)


def check_directory(directory: str | Path) -> list[str]:
    """Every problem of a `cluster/` folder: launcher YAMLs (Ray's schema), runtime_env.yaml (Ray's
    RuntimeEnv, paths relative to the folder's parent), KubeRay manifests (required fields and the
    autoscaler's translation of their RayCluster spec). Empty when all is well."""
    directory = Path(directory)
    if not directory.is_dir():
        return [f"{directory}: not a directory"]
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            if path.name == "runtime_env.yaml":
                load_runtime_env(path, base=directory.resolve().parent)
            else:
                validate_launcher_config(load_yaml(path))
        except Exception as error:  # noqa: BLE001 - every validator's error is a problem to list
            problems.append(f"{path}: {type(error).__name__}: {str(error).splitlines()[0]}")
    for path in sorted((directory / "kuberay").glob("*.yaml")):
        for doc in load_yaml_documents(path):
            problems += [f"{path}: {problem}" for problem in kuberay_problems(doc)]
            spec = doc.get("spec", {}) if doc.get("kind") == "RayCluster" else doc.get("spec", {}).get("rayClusterSpec")
            if isinstance(spec, Mapping):
                try:
                    raycluster_autoscaling_config(spec, name=doc.get("metadata", {}).get("name", "reasonbed"))
                except Exception as error:  # noqa: BLE001
                    problems.append(f"{path}: autoscaling config: {type(error).__name__}: {str(error).splitlines()[0]}")
    return problems
