"""Filesystem access for local paths and object stores (s3://, gs://) through fsspec.

S3 endpoints and credentials come from the environment (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, ...) or from `storage_options` in config; they are never logged or written to
results. `redact()` gives a printable copy of storage options.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

_SECRET_WORDS = ("secret", "token", "password", "key", "credential")


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def s3_options(storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """s3fs options with the endpoint taken from config or the environment."""
    options = dict(storage_options or {})
    endpoint = options.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    if endpoint:
        client_kwargs = dict(options.get("client_kwargs") or {})
        client_kwargs.setdefault("endpoint_url", endpoint)
        options["client_kwargs"] = client_kwargs
    return options


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for `url` and the path inside it."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    options = s3_options(storage_options) if protocol in ("s3", "s3a") else dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path.rstrip("/") if path not in ("/", "") else path


def join(root: str, *parts: str) -> str:
    """Join path parts onto a local path or URL with '/'."""
    return "/".join([root.rstrip("/"), *[part.strip("/") for part in parts]])


def redact(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of storage options safe to print: values of secret-looking keys are masked."""
    safe: dict[str, Any] = {}
    for key, value in (storage_options or {}).items():
        if isinstance(value, Mapping):
            safe[key] = redact(value)
        elif any(word in key.lower() for word in _SECRET_WORDS):
            safe[key] = "***"
        else:
            safe[key] = value
    return safe


def pyarrow_filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """A pyarrow filesystem (wrapping fsspec, so endpoints and credentials behave the same) and a path.

    For Ray Train / Tune `storage_filesystem`: local paths return (None, path).
    """
    if not is_remote(url):
        return None, url
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = filesystem(url, storage_options)
    return PyFileSystem(FSSpecHandler(fs)), path
