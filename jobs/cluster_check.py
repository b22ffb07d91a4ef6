"""Smoke job for a Ray cluster: do reasonbed's workers import what they need, and does placement work?

See reasonbed.cli.cluster_check (`reasonbed cluster-check`) for what it checks; it prints one line
`cluster_check: {json}` and exits non-zero on any failure.

One machine (starts a local Ray through reasonbed.ray_runtime.init_ray):
    python jobs/cluster_check.py --smoke-test
    python jobs/cluster_check.py --configs cluster     # the cluster/ config files, with Ray's validators

One machine, through the Jobs API of a local head (Ray 2.60 token auth; from the repository root):
    ray get-auth-token --generate
    RAY_AUTH_MODE=token ray start --head --dashboard-host=127.0.0.1
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 \
        --runtime-env cluster/runtime_env.yaml -- python jobs/cluster_check.py --smoke-test

Cluster (after `ray up cluster/aws.yaml` and `ray dashboard cluster/aws.yaml`, see docs/cluster.md):
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 \
        --runtime-env cluster/runtime_env.yaml -- \
        python jobs/cluster_check.py --require generation_node=1 --require train_node=1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from reasonbed.cli import job  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job("cluster-check", argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
