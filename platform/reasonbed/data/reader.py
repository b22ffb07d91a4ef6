"""Read a DomainBed-layout folder `root/<domain>/<class>/<image>` (local or s3://) into Ray Data.

`scan()` lists and validates the tree against a spec (cheap: names only) and returns index rows;
`read_domainbed()` turns them into a `ray.data.Dataset` with image bytes, checking that every image
decodes. Rows: id (stable hash of dataset/domain/class/file, independent of where root lives),
path (relative to root), domain, class_name, label, image (bytes).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reasonbed import storage
from reasonbed.data.specs import DatasetError, DatasetSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INDEX_COLUMNS = ("id", "path", "domain", "class_name", "label")


def stable_id(dataset: str, relative_path: str) -> str:
    """A short id for an image that does not depend on where the dataset root lives."""
    return hashlib.sha1(f"{dataset}/{relative_path}".encode()).hexdigest()[:16]


def _children(fs: Any, path: str) -> dict[str, str]:
    """Immediate sub-directories of `path`: name -> full path."""
    found = {}
    for entry in fs.ls(path, detail=True):
        if entry.get("type") == "directory":
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            found[name] = entry["name"].rstrip("/")
    return found


def scan(spec: DatasetSpec, root: str, domains: Sequence[str] | None = None,
         storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Index rows for `domains` (default: all of the spec's), validated against the spec."""
    fs, base = storage.filesystem(root, storage_options)
    if not fs.exists(base) or not fs.isdir(base):
        raise DatasetError(f"dataset root {root!r} does not exist or is not a directory")
    wanted = list(domains) if domains else list(spec.domains)
    for domain in wanted:
        spec.check_domain(domain)
    present = _children(fs, base)
    extra = sorted(set(present) - set(spec.domains))
    if extra:
        log.warning("dataset root %s has folders that are not domains of %s: %s", root, spec.name, extra)
    rows: list[dict[str, Any]] = []
    for domain in wanted:
        if domain not in present:
            raise DatasetError(
                f"dataset {spec.name!r}: domain folder {domain!r} is missing under {root!r} "
                f"(found: {', '.join(sorted(present)) or 'nothing'})"
            )
        class_dirs = _children(fs, present[domain])
        for class_name in sorted(class_dirs):
            if class_name not in spec.classes:
                raise DatasetError(
                    f"dataset {spec.name!r}, domain {domain!r}: class folder {class_name!r} is not in the "
                    f"spec; classes: {', '.join(spec.classes)}"
                )
        domain_rows = []
        for class_name in spec.classes:
            if class_name not in class_dirs:
                continue
            for file_path in sorted(fs.find(class_dirs[class_name])):
                name = file_path.rsplit("/", 1)[-1]
                if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                relative = f"{domain}/{class_name}/{file_path[len(class_dirs[class_name]) + 1:]}"
                domain_rows.append({
                    "id": stable_id(spec.name, relative), "path": relative, "domain": domain,
                    "class_name": class_name, "label": spec.label(class_name),
                })
        if not domain_rows:
            raise DatasetError(f"dataset {spec.name!r}: domain {domain!r} under {root!r} has no images")
        rows.extend(domain_rows)
    return rows


def _decode_error(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - any decoder failure means a corrupt image
        return f"{type(error).__name__}: {error}"
    return ""


def _load_images(batch: dict[str, Any], root: str, storage_options: Mapping[str, Any] | None,
                 verify: bool) -> dict[str, Any]:
    """Ray Data batch function: add image bytes (and a decode error, if any) to index rows."""
    fs, base = storage.filesystem(root, storage_options)
    paths = [base + "/" + str(path) for path in batch["path"]]
    blobs = fs.cat(paths, on_error="return")
    images, errors = [], []
    for path in paths:
        blob = blobs.get(path)
        if isinstance(blob, Exception) or blob is None:
            images.append(b"")
            errors.append(f"unreadable: {type(blob).__name__}: {blob}")
        else:
            images.append(blob)
            errors.append(_decode_error(blob) if verify else "")
    return {**batch, "image": images, "error": errors}


@dataclass
class ReadResult:
    """The dataset, its index (no bytes) and the images skipped as corrupt (path, reason)."""

    dataset: Any
    index: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_domainbed(spec: DatasetSpec, root: str, domains: Sequence[str] | None = None,
                   storage_options: Mapping[str, Any] | None = None,
                   on_corrupt: Literal["error", "skip"] = "error", verify_images: bool = True,
                   index: list[dict[str, Any]] | None = None) -> ReadResult:
    """A materialised ray.data.Dataset of image rows; corrupt images raise or are skipped and counted."""
    import ray.data
    from ray.data.expressions import col

    if on_corrupt not in ("error", "skip"):
        raise DatasetError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    rows = index if index is not None else scan(spec, root, domains, storage_options)
    blocks = max(1, min(64, len(rows) // 256))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        _load_images, fn_kwargs={"root": root, "storage_options": dict(storage_options or {}),
                                 "verify": verify_images},
        batch_size=256, batch_format="numpy",
    ).materialize()
    bad = dataset.filter(expr=col("error") != "").select_columns(["path", "error"]).take_all()
    skipped = sorted((row["path"], row["error"]) for row in bad)
    if skipped and on_corrupt == "error":
        listed = "; ".join(f"{path} ({reason})" for path, reason in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise DatasetError(
            f"dataset {spec.name!r} under {root!r}: {len(skipped)} corrupt image(s): {listed}{more}; "
            f"pass on_corrupt='skip' to skip and count them"
        )
    if skipped:
        log.warning("skipped %d corrupt image(s) of %s: %s", len(skipped), spec.name, skipped[:5])
        dataset = dataset.filter(expr=col("error") == "").materialize()
        skipped_paths = {path for path, _ in skipped}
        rows = [row for row in rows if row["path"] not in skipped_paths]
    dataset = dataset.drop_columns(["error"])
    return ReadResult(dataset=dataset, index=rows, skipped=skipped)
