"""Datasets: specs, offline benchmarks, the DomainBed folder reader (local and s3://) and bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from reasonbed.data import catalog, digits, synthetic
from reasonbed.data.reader import read_domainbed, scan
from reasonbed.data.specs import DATASETS, DatasetError, get_spec, load_spec_yaml


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    synthetic.generate(str(root), images_per_class=5, image_size=56, seed=0)
    return root


def test_builtin_specs_have_domainbed_names_and_hierarchies():
    assert get_spec("pacs").domains == ("art_painting", "cartoon", "photo", "sketch")
    assert get_spec("vlcs").classes == ("bird", "car", "chair", "dog", "person")
    office = get_spec("office_home")
    assert len(office.classes) == 65 and office.domains[-1] == "Real World"
    assert sorted(office.classes) == list(office.classes)  # DomainBed's ImageFolder (sorted) order
    assert len(get_spec("terra_incognita").classes) == 10
    for name in DATASETS.names():
        spec = get_spec(name)
        grouped = [member for members in spec.hierarchy.values() for member in members]
        assert sorted(grouped) == sorted(spec.classes), f"{name}: every class in exactly one super-class"


def test_synthetic_benchmark_is_deterministic_and_complete(shapes_root, tmp_path):
    spec = synthetic.SPEC
    assert len(spec.domains) >= 4 and len(spec.classes) >= 5
    again = tmp_path / "again"
    synthetic.generate(str(again), images_per_class=5, image_size=56, seed=0)
    assert _tree_digest(shapes_root) == _tree_digest(again)
    other = tmp_path / "other"
    synthetic.generate(str(other), images_per_class=5, image_size=56, seed=1)
    assert _tree_digest(other) != _tree_digest(again)
    metadata = synthetic.read_metadata(str(shapes_root))
    assert len(metadata) == len(spec.domains) * len(spec.classes) * 5
    row = metadata["sketch/star/star_00000.png"]
    assert row["shape"] == "star" and row["style"] == "sketch" and 1 <= row["count"] <= 3


def test_rotated_digits_from_shipped_images(tmp_path, ray_session):
    images, labels = digits.load_digits()  # the UCI test set the package ships (digits.csv.gz)
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert images[0, 1].tolist() == [0, 0, 13, 15, 10, 15, 5, 0]  # a zero's second row
    spec = digits.generate(str(tmp_path), images_per_domain=40, image_size=28)
    result = read_domainbed(spec, str(tmp_path))
    assert result.dataset.count() == 40 * len(digits.ANGLES)
    assert {row["domain"] for row in result.index} == set(spec.domains)


def test_reader_rows(shapes_root, ray_session):
    spec = synthetic.SPEC
    result = read_domainbed(spec, str(shapes_root))
    rows = result.dataset.take_all()
    assert len(rows) == 4 * 6 * 5 and not result.skipped
    assert set(rows[0]) == {"id", "path", "domain", "class_name", "label", "image"}
    for row in rows:
        assert spec.classes[row["label"]] == row["class_name"] == row["path"].split("/")[1]
        assert row["image"][:4] == b"\x89PNG"
    assert len({row["id"] for row in rows}) == len(rows)
    only = read_domainbed(spec, str(shapes_root), domains=["sketch"])
    assert {row["domain"] for row in only.index} == {"sketch"} and only.dataset.count() == 30


def test_s3_read_equals_local_read(shapes_root, s3_bucket, ray_session):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.put(str(shapes_root), f"{s3_bucket}/shapes", recursive=True)
    spec = synthetic.SPEC

    def digest(root: str) -> list[tuple]:
        rows = read_domainbed(spec, root).dataset.take_all()
        return sorted((r["id"], r["path"], r["domain"], r["class_name"], r["label"],
                       hashlib.sha256(r["image"]).hexdigest()) for r in rows)

    local, remote = digest(str(shapes_root)), digest(f"s3://{s3_bucket}/shapes")
    assert len(local) == 120 and remote == local


def test_s3_generation_and_folder_discovery(s3_bucket, ray_session):
    root = f"s3://{s3_bucket}/generated"
    synthetic.generate(root, images_per_class=2)
    spec = catalog.discover_spec(root)
    assert spec.domains == synthetic.SPEC.domains and spec.classes == synthetic.SPEC.classes
    assert len(scan(spec, root)) == 4 * 6 * 2


def test_folder_dataset_with_yaml_spec(shapes_root, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: my_shapes\ndomains: [photo, sketch]\nclasses: [circle, cross, ring, square, star, triangle]\n"
        "hierarchy:\n  round: [circle, ring]\n")
    cfg = catalog.DataConfig(dataset="folder", root=str(shapes_root), spec_file=str(spec_file))
    spec, root = catalog.resolve(cfg)
    assert spec.name == "my_shapes" and spec.super_class("ring") == "round" and spec.super_class("star") is None
    assert {row["domain"] for row in scan(spec, root)} == {"photo", "sketch"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: [photo]\nclasses: [circle, ring]\nhierarchy:\n  round: [circle, oval]\n")
    with pytest.raises(DatasetError, match="'oval'"):
        load_spec_yaml(bad)


def test_offline_default_is_generated_once(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONBED_CACHE", str(tmp_path))
    cfg = catalog.DataConfig(images_per_class=1)
    spec, root = catalog.resolve(cfg)
    marker = Path(root) / ".complete"
    stamp = marker.stat().st_mtime_ns
    assert catalog.resolve(cfg)[1] == root and marker.stat().st_mtime_ns == stamp
    assert len(scan(spec, root)) == 24


# --- bad input: each a clear error naming it -----------------------------------------------------

def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.*does not exist"):
        scan(synthetic.SPEC, str(tmp_path / "nowhere"))


def test_domain_not_in_spec(shapes_root):
    with pytest.raises(DatasetError, match="no domain 'watercolour'.*cartoon"):
        scan(synthetic.SPEC, str(shapes_root), domains=["watercolour"])


def test_missing_domain_folder(tmp_path):
    synthetic.generate(str(tmp_path), images_per_class=1)
    import shutil

    shutil.rmtree(tmp_path / "photo")
    with pytest.raises(DatasetError, match="domain folder 'photo' is missing"):
        scan(synthetic.SPEC, str(tmp_path))


def test_class_folder_not_in_spec(tmp_path):
    synthetic.generate(str(tmp_path), images_per_class=1)
    (tmp_path / "sketch" / "hexagon").mkdir()
    with pytest.raises(DatasetError, match="domain 'sketch': class folder 'hexagon' is not in the spec"):
        scan(synthetic.SPEC, str(tmp_path))


def test_empty_domain(tmp_path):
    synthetic.generate(str(tmp_path), images_per_class=1)
    for image in (tmp_path / "cartoon").rglob("*.png"):
        image.unlink()
    with pytest.raises(DatasetError, match="domain 'cartoon' .* has no images"):
        scan(synthetic.SPEC, str(tmp_path))


def test_corrupt_image_error_or_skip_and_count(tmp_path, ray_session):
    synthetic.generate(str(tmp_path), images_per_class=2)
    corrupt = tmp_path / "photo" / "star" / "star_00001.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DatasetError, match="photo/star/star_00001.png"):
        read_domainbed(synthetic.SPEC, str(tmp_path))
    result = read_domainbed(synthetic.SPEC, str(tmp_path), on_corrupt="skip")
    assert [path for path, _ in result.skipped] == ["photo/star/star_00001.png"]
    assert result.dataset.count() == 4 * 6 * 2 - 1 == len(result.index)


def test_image_check_is_cached_per_root_and_listing(tmp_path, monkeypatch):
    from reasonbed.data import reader

    monkeypatch.setenv("REASONBED_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    synthetic.generate(str(root), images_per_class=1)
    corrupt = root / "sketch" / "star" / "star_00000.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    decoded: list[int] = []
    decode_all = reader._decode_all
    monkeypatch.setattr(reader, "_decode_all", lambda fs, base, paths, workers: decoded.append(len(paths))
                        or decode_all(fs, base, paths, workers))
    rows = scan(synthetic.SPEC, str(root))
    with pytest.raises(DatasetError, match="sketch/star/star_00000.png.*data.on_corrupt=skip"):
        reader.check_images(synthetic.SPEC, str(root), rows)
    reader._CHECKED.clear()  # as a new process: only the cache file is left
    checked = reader.check_images(synthetic.SPEC, str(root), rows, on_corrupt="skip")
    assert decoded == [24]  # decoded once, the second verdict came from the cache file
    assert checked.record()["skipped"] == 1 and checked.record()["first"][0]["path"] == "sketch/star/star_00000.png"
    assert len(checked.rows) == 23
    synthetic.generate(str(tmp_path / "fresh"), images_per_class=1)
    corrupt.write_bytes((tmp_path / "fresh" / "sketch" / "star" / "star_00000.png").read_bytes())  # repaired
    assert reader.check_images(synthetic.SPEC, str(root), rows).skipped == []  # a changed file: checked again
    assert decoded == [24, 24]
