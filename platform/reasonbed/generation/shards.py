"""Shards of generated chains: planning, atomic writes, resume checks, reading back.

Images are grouped by domain and ordered by id, then cut into blocks of `shard_size`; shard
`<pass>/<domain>/part-<block>.parquet` holds every candidate of its images. A shard is written in
one piece (local: temporary file then rename; object stores: a single PUT), so a file that exists is
complete. On resume a shard counts as done only if its image ids are exactly the planned ones.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reasonbed import storage
from reasonbed.generation.schema import SCHEMA


class OutputError(OSError):
    """The output location cannot be written or holds something unexpected."""


@dataclass
class Shard:
    name: str  # e.g. "pass0/photo/part-00002"
    domain: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def image_ids(self) -> set[str]:
        return {str(row["id"]) for row in self.rows}


def plan_shards(index: Sequence[Mapping[str, Any]], shard_size: int, pass_name: str = "pass0") -> list[Shard]:
    """Deterministic shards: per domain (sorted), images by id, blocks of `shard_size`."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for row in index:
        by_domain.setdefault(str(row["domain"]), []).append(dict(row))
    shards = []
    for domain in sorted(by_domain):
        rows = sorted(by_domain[domain], key=lambda row: str(row["id"]))
        for block, start in enumerate(range(0, len(rows), shard_size)):
            shards.append(Shard(f"{pass_name}/{domain}/part-{block:05d}", domain, rows[start:start + shard_size]))
    return shards


class ShardStore:
    """Reads and writes the shards and manifest under one output root (local or s3://)."""

    def __init__(self, output: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if not output:
            raise OutputError("output is required (a local directory or s3://bucket/prefix)")
        self.output = output
        self.fs, self.base = storage.filesystem(output, storage_options)
        self.local = not storage.is_remote(output)

    def path(self, shard_name: str) -> str:
        return f"{self.base}/{shard_name}.parquet"

    def check_writable(self) -> None:
        """Write and remove a probe file; an error names the output path."""
        probe = f"{self.base}/.write-probe-{uuid.uuid4().hex[:8]}"
        try:
            self.fs.makedirs(self.base, exist_ok=True)
            self.fs.pipe(probe, b"ok")
            self.fs.rm(probe)
        except (OSError, PermissionError, ValueError) as error:
            raise OutputError(f"output {self.output!r} cannot be written: {error}") from error

    def write_bytes(self, path: str, data: bytes) -> None:
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        else:
            self.fs.pipe(path, data)  # one PUT: the object appears whole or not at all

    def write_shard(self, shard_name: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self.write_bytes(self.path(shard_name), buffer.getvalue())

    def is_complete(self, shard: Shard) -> bool:
        path = self.path(shard.name)
        if not self.fs.exists(path):
            return False
        try:
            with self.fs.open(path, "rb") as handle:
                ids = set(pq.read_table(handle, columns=["image_id"]).column("image_id").to_pylist())
        except (OSError, pa.ArrowInvalid):
            return False
        return ids == shard.image_ids

    def read(self, pass_prefix: str = "", columns: Sequence[str] | None = None) -> pa.Table:
        """All shards (optionally of one pass) as one table."""
        pattern = f"{self.base}/{pass_prefix}**/*.parquet" if pass_prefix else f"{self.base}/**/*.parquet"
        paths = sorted(path for path in self.fs.glob(pattern) if ".tmp-" not in path)
        tables = []
        for path in paths:
            with self.fs.open(path, "rb") as handle:
                tables.append(pq.read_table(handle, columns=list(columns) if columns else None))
        if not tables:
            return SCHEMA.empty_table() if not columns else pa.schema(
                [SCHEMA.field(name) for name in columns]).empty_table()
        return pa.concat_tables(tables)

    def list_shards(self) -> list[dict[str, Any]]:
        """Every shard file with its row count (from parquet metadata)."""
        found = []
        for path in sorted(self.fs.glob(f"{self.base}/**/*.parquet")):
            if ".tmp-" in path:
                continue
            with self.fs.open(path, "rb") as handle:
                rows = pq.ParquetFile(handle).metadata.num_rows
            found.append({"shard": path[len(self.base) + 1:-len(".parquet")], "rows": rows})
        return found

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        self.write_bytes(f"{self.base}/manifest.json", json.dumps(manifest, indent=2, default=str).encode())

    def read_manifest(self) -> dict[str, Any] | None:
        path = f"{self.base}/manifest.json"
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as handle:
            return json.load(handle)


def kept_chains(output: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The kept chains of a generation output (what training reads)."""
    table = ShardStore(output, storage_options).read()
    return table.filter(pc.equal(table.column("kept"), True))
