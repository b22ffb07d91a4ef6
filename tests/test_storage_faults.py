"""Object-storage faults: reads, writes and listings retry through an outage of the local S3 server (a proxy in
front of moto refusing and resetting connections), fail after the retry window naming the URL, and
generation and training runs finish across an outage (8 s: past s3fs's own retries) with nothing duplicated or missing."""

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


@pytest.mark.slow  # waits out a real outage
def test_calls_retry_through_an_outage(s3_bucket, s3_proxy, monkeypatch):
    monkeypatch.setenv(storage.RETRY_ENV, "60")
    url = _url(s3_bucket, "a.txt")
    fs, path = storage.filesystem(url)
    fs.pipe(path, b"before")
    outage = s3_proxy.outage_in_background(4)  # longer than s3fs's own retries (about 2 s)
    time.sleep(0.5)
    started = time.monotonic()
    fs.pipe(path + ".2", b"during")  # refused at first, written once the server is back
    assert time.monotonic() - started > 2.5  # it did wait for the outage
    assert fs.cat(path) == b"before"
    outage.join()
    outage = s3_proxy.outage_in_background(3)
    time.sleep(0.5)
    with fs.open(path + ".3", "wb") as handle:  # an open file's upload (what pyarrow and Ray Train use)
        handle.write(b"file")
    with fs.open(path + ".3", "rb") as handle:
        assert handle.read() == b"file"
    outage.join()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path.rsplit("/", 1)[0], refresh=True)) == [
        "a.txt", "a.txt.2", "a.txt.3"]
    with storage.filesystem(url)[0].open(path + ".2", "rb") as handle:
        assert handle.read() == b"during"


@pytest.mark.slow  # waits out a real outage
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


@pytest.mark.slow  # waits out read timeouts
def test_an_upload_to_a_server_that_stops_answering_fails_after_the_window_instead_of_hanging():
    import contextlib
    import socket
    import threading

    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, reads nothing, answers nothing
    held: list[socket.socket] = []

    def accept_and_hold() -> None:
        with contextlib.suppress(OSError):  # the test closes the server at its end
            while True:
                held.append(silent.accept()[0])

    threading.Thread(target=accept_and_hold, daemon=True).start()
    url = f"s3://bucket-{uuid.uuid4().hex[:8]}/silent.bin"
    fs, path = storage.filesystem(url, {
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}"},
        "key": "testing", "secret": "testing", "config_kwargs": {"read_timeout": 1}, "retry_seconds": 2})
    fs.retries = 1  # s3fs's own retries (5 by default) would only lengthen the test
    raised: list[BaseException] = []

    def upload() -> None:
        try:
            with fs.open(path, "wb") as handle:  # a file body, as Ray Train's checkpoint uploads send
                handle.write(b"x" * 1000)
        except BaseException as error:  # noqa: BLE001 - examined below
            raised.append(error)

    uploading = threading.Thread(target=upload, daemon=True)
    uploading.start()
    uploading.join(timeout=60)  # with botocore's `Expect: 100-continue` aiohttp waited for a go-ahead forever
    silent.close()
    assert held and not uploading.is_alive(), "the upload hung on a server that stopped answering"
    assert isinstance(raised[0], storage.StorageUnavailableError) and "silent.bin" in str(raised[0]), raised


OUTAGE_S = 8  # longer than any retry inside s3fs (about 2 s; botocore's own are off), shorter than the window


def _versioned_bucket(s3_moto: str) -> tuple[str, object]:
    """A fresh bucket with versioning on (every PUT of a key leaves a version: writes can be counted) and an
    s3fs client that talks to moto directly, around the proxy, so the test sees through the outage."""
    import s3fs

    direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_moto})
    bucket = f"rb-v-{uuid.uuid4().hex[:8]}"
    direct.mkdir(bucket)
    direct.call_s3("put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket, direct


def _versions(direct, bucket: str, prefix: str) -> dict[str, int]:
    listed = direct.call_s3("list_object_versions", Bucket=bucket, Prefix=prefix)
    counts: dict[str, int] = {}
    for version in listed.get("Versions", []):
        counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


def _shapes_on_s3(bucket: str, tmp_path, corrupt: str = "") -> str:
    from reasonbed.data import synthetic

    local = tmp_path / "shapes"
    synthetic.generate(str(local), images_per_class=2)
    if corrupt:
        (local / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    root = f"s3://{bucket}/data/shapes"
    fs, path = storage.filesystem(root)
    fs.put(str(local) + "/", path, recursive=True)
    return root


@pytest.mark.slow
def test_generation_finishes_across_an_outage_writing_each_shard_once(tmp_path, s3_moto, s3_proxy, ray_session,
                                                                        monkeypatch):
    from reasonbed.config import load
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation
    from reasonbed.generation.shards import ShardStore

    bucket, direct = _versioned_bucket(s3_moto)
    root = _shapes_on_s3(bucket, tmp_path)
    output = f"s3://{bucket}/chains"
    cut: list[float] = []
    write_shard = ShardStore.write_shard

    def write_during_outage(self, name, table):  # the first shard write starts the outage, then writes into it
        if not cut:
            cut.append(time.monotonic())
            s3_proxy.outage_in_background(OUTAGE_S)
            time.sleep(0.5)
        return write_shard(self, name, table)

    monkeypatch.setattr(ShardStore, "write_shard", write_during_outage)
    cfg = load(GenerationConfig, base={"data": {"dataset": "synthetic_shapes", "root": root}, "output": output,
                                       "shard_size": 4, "engine": {"name": "template"}, "sampling": {"n": 2}})
    summary = run_generation(cfg)
    assert cut and time.monotonic() - cut[0] > OUTAGE_S - 1, "the run did not wait through the outage"
    assert summary["images"] == 48 and summary["candidates"] == 96
    store = ShardStore(output)
    table = store.read()
    pairs = list(zip(table.column("image_id").to_pylist(), table.column("candidate").to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) == 96  # nothing duplicated, nothing missing
    shards = _versions(direct, bucket, "chains/pass0/")
    assert len(shards) == 12 and set(shards.values()) == {1}, shards  # each shard written once


@pytest.mark.slow
def test_training_finishes_across_an_outage_in_a_checkpoint_upload_and_counts_skipped_images(
        tmp_path, s3_moto, s3_proxy, ray_session):
    import json
    import threading

    from reasonbed.config import load
    from reasonbed.data.specs import DatasetError
    from reasonbed.train.config import TrainConfig
    from reasonbed.train.run import run

    bucket, direct = _versioned_bucket(s3_moto)
    corrupt = "sketch/ring/ring_00001.png"
    root = _shapes_on_s3(bucket, tmp_path, corrupt=corrupt)
    base = {"data": {"dataset": "synthetic_shapes", "root": root}, "test_domain": "photo",
            "optim": {"batch_size": 8, "max_steps": 6, "lr": 3e-3, "warmup_ratio": 0.0},
            "eval": {"every": 2, "max_per_domain": 3}, "scale": {"keep_checkpoints": 5},
            "storage_path": f"s3://{bucket}/train", "name": "outage",
            "model": {"tiny_pretrained": False}}  # faults, not learning: conftest's RANDOM_MODEL

    with pytest.raises(DatasetError, match=corrupt):  # data.on_corrupt=error: named before training starts
        run(load(TrainConfig, overrides=[f"run_dir={tmp_path / 'refused'}"], base=base))
    assert not _versions(direct, bucket, "train/"), "something was written before the corrupt image was found"

    cfg = load(TrainConfig, overrides=[f"run_dir={tmp_path / 'run'}", "data.on_corrupt=skip"], base=base)
    cut: list[float] = []

    def cut_at_first_checkpoint() -> None:  # the moment the first checkpoint's files start to arrive
        deadline = time.time() + 900
        while time.time() < deadline and not cut:
            if any("checkpoint_step" in key for key in _versions(direct, bucket, "train/outage/")):
                cut.append(time.monotonic())
                s3_proxy.outage(OUTAGE_S)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=cut_at_first_checkpoint, daemon=True)
    watcher.start()
    result = run(cfg)
    watcher.join(timeout=OUTAGE_S + 5)
    assert cut, "no checkpoint upload was seen to cut"
    assert [report["step"] for report in result.metrics] == [2, 4, 6]  # every evaluation, once
    assert result.skipped_inputs["skipped"] == 1 and result.skipped_inputs["first"][0]["path"] == corrupt
    provenance = json.loads((result.run_dir / "provenance.json").read_text())
    assert provenance["skipped_inputs"]["skipped"] == 1 and provenance["images"] == 4 * 6 * 2 - 1
    keys = _versions(direct, bucket, "train/outage/")
    for step in (2, 4, 6):  # every checkpoint complete in storage
        state = f"train/outage/checkpoint_step{step:06d}/state.json"
        assert state in keys, sorted(keys)
        saved = json.loads(direct.cat_file(f"{bucket}/{state}"))
        assert saved["step"] == step and [r["step"] for r in saved["reports"]] == [2, 4, 6][:step // 2]
    assert (result.run_dir / "done").is_file() and (result.adapter / "adapter_config.json").is_file()
