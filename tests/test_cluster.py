"""Cluster configs and job submission: launcher YAMLs, KubeRay manifests, runtime_env, autoscaling.

Fast tests check `cluster/` with Ray's own machinery: the launcher YAMLs against the JSON schema the
Ray wheel ships (`prepare_config` + `validate_config`), the KubeRay manifests against KubeRay's
required fields and through the RayCluster -> autoscaling-config translation the Ray autoscaler runs
in a KubeRay head pod, and `cluster/runtime_env.yaml` as a Ray `RuntimeEnv`. The slow tests' own Ray
heads are in tests/own_ray_head.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasonbed.cli import cluster_check
from reasonbed.cli import cluster_files as rc
from reasonbed.ray_runtime import SETUP_HOOK, worker_runtime_env

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHERS = ("aws.yaml", "gcp.yaml")
KUBERAY_FILES = sorted((CLUSTER / "kuberay").glob("*.yaml"))
# Instance types of the 8-GPU training group (AWS detects GPUs from the type).
EIGHT_GPU_TYPES = {"p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge"}


def _launcher(name: str) -> dict[str, Any]:
    return rc.load_yaml(CLUSTER / name)


def _role_types(config: dict[str, Any], resource: str) -> dict[str, dict[str, Any]]:
    return {n: t for n, t in rc.worker_node_types(config).items() if resource in rc.custom_resources(t)}


# ------------------------------------------------------------------------------------ launcher YAMLs


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_validates_against_rays_schema(name: str) -> None:
    prepared = rc.validate_launcher_config(_launcher(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert prepared["provider"]["type"] == name.split(".")[0]


@pytest.mark.parametrize("mutation", ["top_level_typo", "node_type_typo", "unknown_head", "min_above_global_max"])
def test_launcher_validation_catches_mistakes(mutation: str) -> None:
    """Negative control: the same validator rejects typos and bad node types."""
    import jsonschema

    config = copy.deepcopy(_launcher("aws.yaml"))
    if mutation == "top_level_typo":
        config["idle_timeout_minute"] = config.pop("idle_timeout_minutes")
    elif mutation == "node_type_typo":
        config["available_node_types"]["train_8gpu"]["max_worker"] = 2
    elif mutation == "unknown_head":
        config["head_node_type"] = "head_node"
    else:
        config["available_node_types"]["generation_1gpu"]["min_workers"] = config["max_workers"] + 1
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        rc.validate_launcher_config(config)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_worker_groups_and_setup(name: str) -> None:
    config = _launcher(name)
    raw = (CLUSTER / name).read_text()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head runs no tasks"
    train, generation = _role_types(config, rc.TRAIN_RESOURCE), _role_types(config, rc.GENERATION_RESOURCE)
    assert len(train) == 1 and len(generation) == 1, (train, generation)
    (train_type,), (gen_type,) = train.values(), generation.values()
    assert rc.GENERATION_RESOURCE not in rc.custom_resources(train_type)
    # One custom-resource unit per GPU: 8 on the training nodes, 1 on the generation nodes.
    assert train_type["resources"][rc.TRAIN_RESOURCE] == 8
    assert gen_type["resources"][rc.GENERATION_RESOURCE] == 1
    if name == "aws.yaml":
        assert train_type["node_config"]["InstanceType"] in EIGHT_GPU_TYPES
    else:
        assert train_type["resources"]["GPU"] == 8 and gen_type["resources"]["GPU"] == 1
    workers = rc.worker_node_types(config)
    for spec in workers.values():
        assert 0 <= spec["min_workers"] <= spec["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]
    assert 0 < config["idle_timeout_minutes"] <= 60
    # Setup installs the project with its gpu extra from the synced working dir, with the pinned versions.
    assert any("pip install -c constraints.txt -e '.[gpu" in cmd and "reasonbed" in cmd
               for cmd in config["setup_commands"])
    assert config["file_mounts"]["~/reasonbed"] == "."
    # Container image: offered, but commented out.
    assert "docker" not in config
    assert re.search(r"^# docker:\n#\s+image: rayproject/ray:2\.60\.0", raw, re.M)
    # Token auth on every node, the token shipped as a file.
    for cmd in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in cmd
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


SECRET_PATTERNS = {
    "aws access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "aws secret key": r"(?i)aws_secret_access_key\s*[:=]\s*\S+",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "gcp key file": r'"private_key(_id)?"\s*:',
    "gcp credentials block": r"(?m)^\s*gcp_credentials\s*:",
    "ray token value": r"(?i)RAY_AUTH_TOKEN\s*[:=]\s*['\"]?[0-9a-f]{16,}",
    "password": r"(?i)\bpassword\s*[:=]\s*\S+",
    "github token": r"\bgh[pousr]_[A-Za-z0-9]{20,}\b",
}


def test_no_credentials_in_cluster_files() -> None:
    files = [p for p in CLUSTER.rglob("*") if p.is_file()] + [REPO / "docs" / "cluster.md"]
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        for label, pattern in SECRET_PATTERNS.items():
            assert not re.search(pattern, text), f"{path.relative_to(REPO)} looks like it holds a {label}"


def test_fake_autoscaling_config_mirrors_launcher() -> None:
    launcher = _launcher("aws.yaml")
    fake = rc.fake_autoscaling_config(launcher, gcs_address="127.0.0.1:6379", max_workers_per_type=2)
    types = fake["available_node_types"]
    assert set(types) == {rc.FAKE_HEAD_NODE_TYPE} | set(rc.worker_node_types(launcher))
    for name, spec in rc.worker_node_types(launcher).items():
        assert rc.custom_resources(types[name]) == rc.custom_resources(spec)
        assert "GPU" not in types[name]["resources"] and types[name]["resources"]["CPU"] == 1
        assert types[name]["min_workers"] == 0 and 1 <= types[name]["max_workers"] <= 2
    assert fake["provider"] == {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                                "disable_launch_config_check": True, "gcs_address": "127.0.0.1:6379"}


# -------------------------------------------------------------------------------------- runtime_env


def test_runtime_env_yaml() -> None:
    env = rc.load_runtime_env(CLUSTER / "runtime_env.yaml")  # also validated by Ray's RuntimeEnv
    assert env["working_dir"] == "."
    assert env["py_modules"] == ["platform/reasonbed"] and (REPO / "platform/reasonbed/__init__.py").is_file()
    assert env["worker_process_setup_hook"] == SETUP_HOOK == "reasonbed.compat.torchvision_fix.install"
    env_vars = env["env_vars"]
    assert all(isinstance(v, str) for v in env_vars.values())
    assert env_vars["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env_vars["TOKENIZERS_PARALLELISM"] == "false"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env_vars, "CPU-only setting: commented out for GPU clusters"
    assert re.search(r"^\s*# VLLM_CPU_KVCACHE_SPACE:", (CLUSTER / "runtime_env.yaml").read_text(), re.M)
    for pattern in (".venv", ".git", "__pycache__", "runs", "outputs", ".pytest_cache"):
        assert pattern in env["excludes"]


def test_runtime_env_excludes_keep_the_upload_small() -> None:
    """Walk the repository as Ray's packager does (excludes + .gitignore) without zipping it."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    excludes = rc.load_runtime_env()["excludes"]
    files: list[Path] = []
    _dir_travel(REPO, [_get_excludes(REPO, excludes)], lambda p: files.append(p) if p.is_file() else None,
                include_gitignore=True)
    relative = [p.relative_to(REPO).parts for p in files]
    assert ("jobs", "cluster_check.py") in relative
    assert not [r for r in relative if r[0] in (".venv", ".git") or "__pycache__" in r]
    assert sum(p.stat().st_size for p in files) < 64 * 1024 * 1024


def test_driver_runtime_env_conflicts_with_job_env_without_override() -> None:
    """Ray 2.60 merges a job's runtime_env with the driver's `ray.init(runtime_env=...)` per field and
    per env var, and refuses any overlap unless RAY_OVERRIDE_JOB_RUNTIME_ENV=1, in which case the
    driver's values win. init_ray() sets the same hook and variables as cluster/runtime_env.yaml."""
    from ray.runtime_env.runtime_env import _merge_runtime_env

    job_env = rc.load_runtime_env()
    driver_env = worker_runtime_env()
    assert _merge_runtime_env(job_env, driver_env, override=False) is None
    merged = _merge_runtime_env(job_env, driver_env, override=True)
    assert merged["working_dir"] == "." and merged["py_modules"] == ["platform/reasonbed"]
    assert merged["worker_process_setup_hook"] == SETUP_HOOK
    assert job_env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"


# ------------------------------------------------------------------------------------------ KubeRay


def _kuberay_docs() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in KUBERAY_FILES:
        (doc,) = rc.load_yaml_documents(path)
        docs[path.name] = doc
    return docs


def test_kuberay_folder_has_the_manifests() -> None:
    kinds = {name: doc["kind"] for name, doc in _kuberay_docs().items()}
    assert kinds == {"raycluster.yaml": "RayCluster", "rayjob-generate-reasoning.yaml": "RayJob",
                     "rayjob-tune-pacs.yaml": "RayJob"}


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_manifest_has_required_fields(path: Path) -> None:
    (doc,) = rc.load_yaml_documents(path)
    assert rc.kuberay_problems(doc) == []


@pytest.mark.parametrize("mutation", ["no_group_name", "min_above_max", "bad_upscaling_mode", "no_image",
                                      "wrong_api_version", "rayjob_bad_runtime_env", "rayjob_no_entrypoint"])
def test_kuberay_checker_catches_mistakes(mutation: str) -> None:
    docs = _kuberay_docs()
    cluster, job = copy.deepcopy(docs["raycluster.yaml"]), copy.deepcopy(docs["rayjob-tune-pacs.yaml"])
    groups = cluster["spec"]["workerGroupSpecs"]
    doc = cluster
    if mutation == "no_group_name":
        del groups[0]["groupName"]
    elif mutation == "min_above_max":
        groups[1]["minReplicas"] = groups[1]["maxReplicas"] + 1
    elif mutation == "bad_upscaling_mode":
        cluster["spec"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    elif mutation == "no_image":
        del cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    elif mutation == "wrong_api_version":
        cluster["apiVersion"] = "ray.io/v1alpha1"
    elif mutation == "rayjob_bad_runtime_env":
        job["spec"]["runtimeEnvYAML"] += "\nworking_dirr: /tmp\n"
        doc = job
    else:
        del job["spec"]["entrypoint"]
        doc = job
    assert rc.kuberay_problems(doc)


def _group_resources(autoscaling: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t["resources"] for name, t in autoscaling["available_node_types"].items()}


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_spec_gives_a_valid_autoscaling_config(path: Path) -> None:
    """The translation the Ray autoscaler runs in a KubeRay head pod, validated by Ray's schema."""
    (doc,) = rc.load_yaml_documents(path)
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    autoscaling = rc.raycluster_autoscaling_config(spec, name=doc["metadata"]["name"])
    resources = _group_resources(autoscaling)
    assert resources["headgroup"]["CPU"] == 0
    assert resources["train-8gpu"]["GPU"] == 8 and resources["train-8gpu"][rc.TRAIN_RESOURCE] == 8
    assert resources["generation-1gpu"]["GPU"] == 1 and resources["generation-1gpu"][rc.GENERATION_RESOURCE] == 1
    assert autoscaling["idle_timeout_minutes"] == pytest.approx(10.0)
    # The same custom resources as the launcher configs, so jobs place the same way everywhere.
    launcher_custom = {k for t in rc.worker_node_types(_launcher("aws.yaml")).values() for k in rc.custom_resources(t)}
    k8s_custom = {k for r in resources.values() for k in r if k not in rc.STANDARD_RESOURCES}
    assert k8s_custom == launcher_custom == set(rc.NODE_ROLE_RESOURCES)
    import ray

    assert spec["rayVersion"] == ray.__version__


def test_rayjobs_run_the_project_jobs_on_the_same_cluster_spec() -> None:
    docs = _kuberay_docs()
    cluster_spec = docs["raycluster.yaml"]["spec"]
    job_env = rc.load_runtime_env()
    expected = {"rayjob-tune-pacs.yaml": "jobs/tune_pacs.py", "rayjob-generate-reasoning.yaml": "jobs/generate_reasoning.py"}
    for name, script in expected.items():
        spec = docs[name]["spec"]
        entry = spec["entrypoint"].split()  # tests/test_documented_commands.py runs it with --dry-run
        assert entry[:2] == ["python", script] and (REPO / entry[entry.index("--config") + 1]).is_file()
        assert entry[entry.index("--data-root") + 1].startswith("s3://")
        assert spec["rayClusterSpec"] == cluster_spec, f"{name}: rayClusterSpec drifted from raycluster.yaml"
        assert spec["shutdownAfterJobFinishes"] is True
        runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert runtime_env["env_vars"] == job_env["env_vars"]
        assert runtime_env["worker_process_setup_hook"] == job_env["worker_process_setup_hook"]
        assert Path(runtime_env["working_dir"]).is_absolute()


def test_cluster_check_cli() -> None:
    args = cluster_check.build_parser().parse_args(["--smoke-test", "--require", "generation_node=1",
                                                    "--require", "train_node"])
    assert args.smoke_test and args.require == [("generation_node", 1.0), ("train_node", 1.0)]
    with pytest.raises(SystemExit):
        cluster_check.build_parser().parse_args(["--require", "=2"])
