"""Read a DomainBed-layout folder `root/<domain>/<class>/<image>` (local or s3://) into Ray Data.

`scan()` lists and validates the tree against a spec (cheap: names only) and returns index rows;
`check_images()` decodes every image of an index once (threads, in parallel) and applies
`data.on_corrupt` before anything trains or generates: `error` stops naming the corrupt files, `skip`
drops them and counts them (`ImageCheck.record()`: the count and the first paths, for run summaries,
provenance and reports). Its verdict is cached per data root and listing (paths, sizes, ETags or
modification times) in the reasonbed cache, so a sweep's many runs decode each image once.
`read_domainbed()` turns the checked rows into a `ray.data.Dataset` with image bytes.
Rows: id (stable hash of dataset/domain/class/file, independent of where root lives),
path (relative to root), domain, class_name, label, image (bytes).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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


def load_images(batch: dict[str, Any], root: str, storage_options: Mapping[str, Any] | None,
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


CHECK_VERSION = 1  # bump when the decode check changes: cached verdicts of older checks are not reused
_CHECKED: dict[str, dict[str, str]] = {}  # this process's verdicts by listing fingerprint


@dataclass
class ImageCheck:
    """The index rows kept after the image check, and the images skipped as corrupt (path, reason)."""

    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    on_corrupt: str = "error"

    def record(self, first: int = 10) -> dict[str, Any]:
        """What a summary, provenance or report says: how many images were skipped and the first of them."""
        return {"on_corrupt": self.on_corrupt, "skipped": len(self.skipped),
                "first": [{"path": path, "reason": reason} for path, reason in self.skipped[:first]]}


def _fingerprint(fs: Any, base: str, root: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """A hash of the root and of every indexed file's path, size and version stamp (ETag or mtime)."""
    listing = fs.find(base, detail=True)
    digest = hashlib.sha256(f"{CHECK_VERSION}\n{root}\n".encode())
    for path in sorted(str(row["path"]) for row in rows):
        info = listing.get(f"{base}/{path}") or {}
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        digest.update(f"{path}\t{info.get('size')}\t{stamp}\n".encode())
    return digest.hexdigest()


def _decode_all(fs: Any, base: str, paths: Sequence[str], workers: int) -> dict[str, str]:
    """Read and decode every image (threads); returns path -> reason for those that fail."""
    def verdict(path: str) -> str:
        try:
            data = fs.cat_file(f"{base}/{path}")
        except Exception as error:  # noqa: BLE001 - an unreadable file is a corrupt input, named below
            return f"unreadable: {type(error).__name__}: {error}"
        return _decode_error(data)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(pool.map(verdict, paths))
    return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason}


def corrupt_images(root: str, rows: Sequence[Mapping[str, Any]], storage_options: Mapping[str, Any] | None = None,
                   workers: int = 8) -> dict[str, str]:
    """path -> reason for every image of `rows` that cannot be read or decoded (cached, see the module doc)."""
    fs, base = storage.filesystem(root, storage_options)
    key = _fingerprint(fs, base, root, rows)
    if key in _CHECKED:
        return _CHECKED[key]
    cached = storage.cache_dir() / "image-checks" / f"{key[:32]}.json"
    if cached.is_file():
        try:
            _CHECKED[key] = dict(json.loads(cached.read_text())["corrupt"])
            return _CHECKED[key]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable image-check cache file %s", cached)
    paths = [str(row["path"]) for row in rows]
    log.info("checking that %d images of %s decode (once per data root and listing)", len(paths), root)
    bad = _decode_all(fs, base, paths, workers)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = cached.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    staging.write_text(json.dumps({"root": root, "images": len(paths), "corrupt": bad}, indent=1))
    staging.replace(cached)
    _CHECKED[key] = bad
    return bad


def check_images(spec: DatasetSpec, root: str, rows: Sequence[Mapping[str, Any]],
                 storage_options: Mapping[str, Any] | None = None,
                 on_corrupt: Literal["error", "skip"] = "error") -> ImageCheck:
    """Apply `on_corrupt` to the index: raise DatasetError naming corrupt images, or drop and count them."""
    if on_corrupt not in ("error", "skip"):
        raise DatasetError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    bad = corrupt_images(root, rows, storage_options)
    skipped = sorted(bad.items())
    if skipped and on_corrupt == "error":
        listed = "; ".join(f"{path} ({reason})" for path, reason in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise DatasetError(
            f"dataset {spec.name!r} under {root!r}: {len(skipped)} corrupt image(s): {listed}{more}; "
            f"set data.on_corrupt=skip to skip and count them"
        )
    if skipped:
        log.warning("skipped %d corrupt image(s) of %s (data.on_corrupt=skip): %s", len(skipped), spec.name,
                    ", ".join(path for path, _ in skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    kept = [dict(row) for row in rows if row["path"] not in bad]
    return ImageCheck(rows=kept, skipped=skipped, on_corrupt=on_corrupt)


@dataclass
class ReadResult:
    """The dataset, its index (no bytes) and the images skipped as corrupt (path, reason)."""

    dataset: Any
    index: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_domainbed(spec: DatasetSpec, root: str, domains: Sequence[str] | None = None,
                   storage_options: Mapping[str, Any] | None = None,
                   on_corrupt: Literal["error", "skip"] = "error",
                   index: list[dict[str, Any]] | None = None) -> ReadResult:
    """A materialised ray.data.Dataset of the checked image rows (check_images: corrupt ones raise or are
    skipped and counted)."""
    import ray.data

    rows = index if index is not None else scan(spec, root, domains, storage_options)
    checked = check_images(spec, root, rows, storage_options, on_corrupt)
    blocks = max(1, min(64, len(checked.rows) // 256))
    dataset = ray.data.from_items(checked.rows, override_num_blocks=blocks).map_batches(
        load_images, fn_kwargs={"root": root, "storage_options": dict(storage_options or {}), "verify": False},
        batch_size=256, batch_format="numpy",
    ).drop_columns(["error"]).materialize()
    return ReadResult(dataset=dataset, index=checked.rows, skipped=checked.skipped)
