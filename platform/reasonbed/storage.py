"""Filesystem access for local paths and object stores (s3://, gs://) through fsspec.

S3 endpoints and credentials come from the environment (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, ...) or from `storage_options` in config; they are never logged or written to
results. `redact()` gives a printable copy of storage options.

Transient object-store faults (connection refused or reset, timeouts, HTTP 5xx, throttling) are
retried with backoff for a window (`retry_seconds` in storage options, else the environment's
REASONBED_STORAGE_RETRY_SECONDS, default 60 s), then fail with `StorageUnavailableError` naming the
URL. For S3 the retry wraps s3fs's one call to the service (`_call_s3`), so every read, write,
listing and open file - and Ray Train/Tune's storage through `pyarrow_filesystem` - is covered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

_SECRET_WORDS = ("secret", "token", "password", "key", "credential")
RETRY_ENV = "REASONBED_STORAGE_RETRY_SECONDS"  # the retry window in seconds when storage options do not set one
DEFAULT_RETRY_SECONDS = 60.0
_THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
               "RequestTimeout", "RequestThrottled", "ServiceUnavailable", "InternalError"}


class StorageUnavailableError(OSError):
    """Object storage kept failing with transient errors for the whole retry window."""


def cache_dir() -> Path:
    """reasonbed's local cache (tiny models, offline datasets, image checks, features): $REASONBED_CACHE, or
    ~/.cache/reasonbed."""
    return Path(os.environ.get("REASONBED_CACHE") or Path.home() / ".cache" / "reasonbed").expanduser()


def retry_window(seconds: float | None = None) -> float:
    """The retry window: the given value, else REASONBED_STORAGE_RETRY_SECONDS, else 60 s."""
    if seconds is not None:
        return float(seconds)
    value = os.environ.get(RETRY_ENV, "")
    try:
        return float(value) if value else DEFAULT_RETRY_SECONDS
    except ValueError:
        raise ValueError(f"{RETRY_ENV}={value!r}: a number of seconds is required") from None


def is_transient(error: BaseException) -> bool:
    """Whether an object-store error may pass by itself (connection, timeout, 5xx, throttling).

    Follows the exception chain, since s3fs translates service errors into OSError subclasses.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailableError):
            return False
        if isinstance(current, (ConnectionError, TimeoutError, socket.timeout, asyncio.TimeoutError)):
            return True
        module = type(current).__module__ or ""
        name = type(current).__name__
        if module.startswith(("botocore", "aiobotocore", "aiohttp", "urllib3")) and any(
                word in name for word in ("Connection", "Timeout", "ClientPayload", "ServerDisconnected",
                                          "IncompleteRead", "ResponseStreaming", "ResponseParser")):
            return True
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            code = str((response.get("Error") or {}).get("Code") or "")
            if status >= 500 or status == 429 or code in _THROTTLING:
                return True
        current = current.__cause__ or current.__context__
    return False


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): exponential from 0.5 s, capped at 8 s, jittered."""
    return min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


class _Outage:
    """Bookkeeping of one call's retries: when to give up, how long to wait, what to log."""

    def __init__(self, url: str, window: float, started: float) -> None:
        self.url, self.window, self.attempt = url, window, 0
        self.deadline = started + window

    def next_wait(self, error: BaseException) -> float:
        """Seconds to wait before retrying, or raise StorageUnavailableError once the window is spent."""
        self.attempt += 1
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StorageUnavailableError(
                f"object storage {self.url} kept failing for {self.window:g} s ({self.attempt} attempts; last: "
                f"{type(error).__name__}: {error}); raise storage_options retry_seconds or {RETRY_ENV} to wait "
                f"longer") from error
        if self.attempt == 1:
            log.warning("object storage %s: %s: %s; retrying for up to %g s", self.url, type(error).__name__,
                        error, self.window)
        return min(backoff(self.attempt), left)


@functools.cache
def _s3_class() -> type:
    """S3FileSystem with every call to the service retried over the window (defined on first use: importing
    s3fs takes a second, which local-only runs need not pay)."""
    from fsspec.asyn import sync_wrapper
    from s3fs import S3FileSystem

    class RetryingS3FileSystem(S3FileSystem):
        """s3fs whose calls to S3 retry transient faults for `retry_seconds` (see the module docstring)."""

        def __init__(self, *args: Any, retry_seconds: float | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.retry_seconds = retry_seconds

        async def _call_s3(self, method: str, *akwarglist: Any, **kwargs: Any) -> Any:
            outage, started = None, time.monotonic()
            while True:
                try:
                    return await super()._call_s3(method, *akwarglist, **kwargs)
                except Exception as error:  # noqa: BLE001 - classified just below
                    if not is_transient(error):
                        raise
                    if outage is None:  # the window counts from the start of the first, failed, attempt
                        url = f"s3://{kwargs.get('Bucket', '')}/{kwargs.get('Key', kwargs.get('Prefix', ''))}"
                        outage = _Outage(f"{url} ({method})", retry_window(self.retry_seconds), started)
                    await asyncio.sleep(outage.next_wait(error))

        call_s3 = sync_wrapper(_call_s3)  # s3fs's open files call this synchronous twin: it must be ours too

        async def get_s3(self, bucket: str | None = None) -> Any:
            client = await super().get_s3(bucket)
            if not getattr(client, "_reasonbed_no_expect", False):
                _drop_expect_continue(client)
            return client

    RetryingS3FileSystem.__module__ = __name__
    RetryingS3FileSystem.__qualname__ = "RetryingS3FileSystem"
    return RetryingS3FileSystem


def _drop_expect_continue(client: Any) -> None:
    """Send S3 uploads without `Expect: 100-continue` (botocore adds it to every PUT with a file body).

    aiohttp waits for the server's "100 Continue" without any timeout, so an upload whose connection went
    silent (a server or proxy that died mid-request) hung forever, past the read timeout and the retry
    window: a Ray Train checkpoint upload did, in tests/test_storage_faults.py. Without the header the
    read timeout ends the attempt and the window retries it. The cost: a PUT the server refuses sends
    its body first.
    """
    from botocore.handlers import add_expect_header

    client.meta.events.unregister("before-call.s3", add_expect_header)
    client._reasonbed_no_expect = True


def __getattr__(name: str) -> Any:  # the class pickles by reference (Ray ships filesystems to workers)
    if name == "RetryingS3FileSystem":
        return _s3_class()
    raise AttributeError(name)


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def s3_options(storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """s3fs options with the endpoint taken from config or the environment, and botocore's own retries off
    (one attempt per call) unless configured: the retry window above is the one policy."""
    options = dict(storage_options or {})
    config_kwargs = dict(options.get("config_kwargs") or {})
    config_kwargs.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
    options["config_kwargs"] = config_kwargs
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
    if protocol in ("s3", "s3a"):
        cls = _s3_class()
        fs, path = cls(**s3_options(storage_options)), cls._strip_protocol(url)
    else:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return fs, path.rstrip("/") if path not in ("/", "") else path


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole object or file (one PUT on object stores), creating parent folders."""
    fs, path = filesystem(url)
    if "/" in path.strip("/"):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def read_json(fs: AbstractFileSystem, path: str) -> Any:
    """The JSON document at `path` of `fs` (a pair `filesystem()` returns)."""
    with fs.open(path, "r") as handle:
        return json.load(handle)


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
