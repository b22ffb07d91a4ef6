"""`reasonbed cluster-check`: do reasonbed's workers on a Ray cluster import what they need, and does placement work?

Runs a few remote tasks that each import torchvision before anything else (works only if the
runtime_env's `worker_process_setup_hook` ran in that worker), then `import reasonbed`, and check
that `platform` is Python's stdlib module (the repository's `platform/` folder must not shadow it).
With `--require NAME=AMOUNT` (repeatable) it also runs one task per requirement that asks for that
custom resource, e.g. `generation_node=1`: on an autoscaling cluster this makes the autoscaler add a
node of the type that offers it, and the check confirms the task ran on such a node. Prints one line
`cluster_check: {json}` and exits non-zero on any failure. With `--configs DIR` it checks the
cluster config files instead (reasonbed.cli.cluster_files.check_directory), without Ray.

    reasonbed cluster-check --smoke-test          # a local Ray
    reasonbed cluster-check --configs cluster     # cluster/*.yaml and cluster/kuberay/*.yaml
jobs/cluster_check.py has the commands for a local head and for a cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from reasonbed.cli.base import Command

MARKER = "cluster_check:"
WATCHED_ENV = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "TOKENIZERS_PARALLELISM",
               "RAY_NODE_TYPE_NAME")


def probe() -> dict[str, Any]:
    """Runs in a Ray worker: imports, in the order that shows whether the setup hook ran."""
    import sys as _sys

    out: dict[str, Any] = {"pid": os.getpid(), "errors": []}
    # Before importing reasonbed: the worker_process_setup_hook must already have installed the fix.
    out["setup_hook_active"] = any(type(f).__name__ == "TorchvisionOpsFinder" for f in _sys.meta_path)
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except Exception as e:  # noqa: BLE001 - report any import failure
        out["errors"].append(f"import torchvision: {type(e).__name__}: {e}")
    try:
        import reasonbed

        out["reasonbed_file"] = reasonbed.__file__
    except Exception as e:  # noqa: BLE001
        out["errors"].append(f"import reasonbed: {type(e).__name__}: {e}")
    import platform as stdlib_platform

    system = stdlib_platform.system() if hasattr(stdlib_platform, "system") else None
    out["platform_system"] = system
    out["platform_file"] = getattr(stdlib_platform, "__file__", None)
    if not isinstance(system, str) or not system:
        out["errors"].append(f"platform.system() returned {system!r}: stdlib `platform` is shadowed "
                             f"by {out['platform_file']}")
    import ray

    out["node_id"] = ray.get_runtime_context().get_node_id()
    out["env"] = {name: os.environ.get(name) for name in WATCHED_ENV}
    out["cwd"] = os.getcwd()
    out["finished_at"] = time.time()
    return out


def parse_requirement(text: str) -> tuple[str, float]:
    """`NAME=AMOUNT` (AMOUNT defaults to 1) -> (NAME, AMOUNT)."""
    name, _, amount = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got {text!r}")
    try:
        return name, float(amount or 1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got {text!r}") from e


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke-test", action="store_true", help="few tasks and short timeouts")
    parser.add_argument("--tasks", type=int, default=None, help="plain probe tasks (default 4, smoke 2)")
    parser.add_argument("--require", action="append", default=[], type=parse_requirement, metavar="NAME=AMOUNT",
                        help="also run one task asking for this custom resource (repeatable)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for all tasks (default 900, smoke 300)")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--configs", default=None, metavar="DIR",
                        help="instead, check the cluster config files in DIR (e.g. cluster): launcher YAMLs, "
                             "runtime_env.yaml and KubeRay manifests, with Ray's validators; starts no Ray")


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser (reasonbed.cli.base.build_parser of this command)."""
    from reasonbed.cli.base import build_parser as command_parser

    return command_parser(COMMAND)


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults filled in (smoke or not); nothing started."""
    if args.tasks is not None and args.tasks < 0:
        raise ValueError(f"--tasks: value {args.tasks} must be >= 0")
    if args.configs:
        return {"configs": args.configs}
    return {"tasks": args.tasks if args.tasks is not None else (2 if args.smoke_test else 4),
            "timeout": args.timeout if args.timeout is not None else (300.0 if args.smoke_test else 900.0),
            "require": [f"{name}={amount:g}" for name, amount in args.require], "address": args.address}


def run(resolved: dict[str, Any]) -> dict[str, Any]:
    """Start or join Ray, run the probes, and return the summary (never raises for task failures)."""
    import ray

    from reasonbed.ray_runtime import init_ray

    n_tasks, timeout = resolved["tasks"], resolved["timeout"]
    requirements = [parse_requirement(text) for text in resolved["require"]]
    started = time.monotonic()
    init_ray(address=resolved["address"])
    context = ray.get_runtime_context()
    job_env = context.runtime_env or {}
    summary: dict[str, Any] = {
        "ok": False, "ray_version": ray.__version__, "job_id": context.get_job_id(),
        "driver_runtime_env": {"fields": sorted(job_env.keys()),
                               "env_vars": sorted((job_env.get("env_vars") or {}).keys()),
                               "worker_process_setup_hook": job_env.get("worker_process_setup_hook")},
        "errors": [],
    }
    remote_probe = ray.remote(num_cpus=1, max_retries=2)(probe)
    refs = [remote_probe.remote() for _ in range(n_tasks)]
    placed = [(name, amount, remote_probe.options(resources={name: amount}).remote())
              for name, amount in requirements]
    try:
        results = ray.get(refs + [ref for _, _, ref in placed], timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        wanted = ", ".join(f"{n}={a:g}" for n, a, _ in placed) or "CPU"
        summary["errors"].append(f"tasks not done after {timeout:.0f}s: no node offered {wanted} "
                                 "(is the autoscaler running, and does a node type advertise it?)")
        summary["elapsed_s"] = round(time.monotonic() - started, 2)
        return summary
    except Exception as e:  # noqa: BLE001 - a failed task is a failed check
        summary["errors"].append(f"task failed: {type(e).__name__}: {e}")
        summary["elapsed_s"] = round(time.monotonic() - started, 2)
        return summary
    node_resources = {n["NodeID"]: n.get("Resources", {}) for n in ray.nodes()}
    summary["tasks"] = results[:n_tasks]
    summary["placed"] = []
    for (name, amount, _), result in zip(placed, results[n_tasks:], strict=True):
        offered = node_resources.get(result["node_id"], {}).get(name, 0)
        summary["placed"].append({"resource": name, "amount": amount, "node_id": result["node_id"],
                                  "node_offers": offered, "node_type": result["env"].get("RAY_NODE_TYPE_NAME"),
                                  "finished_at": result["finished_at"], "errors": result["errors"]})
        if offered < amount:
            summary["errors"].append(f"{name}={amount:g} task ran on a node offering {offered}")
    for result in results:
        summary["errors"] += result["errors"]
    summary["nodes_alive"] = sum(1 for n in ray.nodes() if n.get("Alive"))
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    summary["ok"] = not summary["errors"]
    return summary


def execute(resolved: dict[str, Any], args: argparse.Namespace) -> int:  # noqa: ARG001
    if "configs" in resolved:
        from reasonbed.cli.cluster_files import check_directory

        problems = check_directory(resolved["configs"])
        summary: dict[str, Any] = {"ok": not problems, "configs": resolved["configs"], "errors": problems}
    else:
        try:
            summary = run(resolved)
        except Exception as e:  # noqa: BLE001 - e.g. Ray could not start or join
            summary = {"ok": False, "errors": [f"{type(e).__name__}: {e}"]}
    print(MARKER, json.dumps(summary, sort_keys=True), flush=True)
    return 0 if summary["ok"] else 1


COMMAND = Command(name="cluster-check", summary="check a Ray cluster's runtime set-up, or the cluster/ config files",
                  doc=__doc__, configure=configure, resolve=resolve, execute=execute)
