"""The images `reasonbed predict` answers: any folder of images, labelled when it is in DomainBed layout.

`list_images(root, ...)` finds every image under `root` (local or s3://, recursively). An image at
`<domain>/<class>/<file>` whose class folder names one of the classes (the dataset's folder names, or
the class names as prompts show them) is labelled; the folder is labelled only when every image is, so
a folder of unsorted images is never half-scored. The domain of an image is its first folder ("" for
images at the root).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reasonbed import storage
from reasonbed.data.reader import IMAGE_SUFFIXES, stable_id
from reasonbed.data.specs import DatasetError


def display_name(folder: str) -> str:
    """A class folder as prompts show it (reasonbed.data.specs.DatasetSpec.display_name's rule)."""
    return folder.replace("_", " ").strip().lower()


def list_images(root: str, class_names: Sequence[str], folders: Sequence[str] = (),
                storage_options: Mapping[str, Any] | None = None, labels: str = "auto"
                ) -> tuple[list[dict[str, Any]], bool]:
    """Index rows (id, path relative to root, domain, label, class_name) and whether the folder is labelled.

    `folders`: the dataset's class folder names in label order (empty: `class_names` are matched by
    their display form); `labels="none"` never labels.
    """
    fs, base = storage.filesystem(root, storage_options)
    if not fs.exists(base) or not fs.isdir(base):
        raise DatasetError(f"data: {root!r} does not exist or is not a directory")
    relative = sorted(path[len(base.rstrip("/")) + 1:] for path in fs.find(base)
                      if path.lower().endswith(IMAGE_SUFFIXES) and not path.rsplit("/", 1)[-1].startswith("."))
    if not relative:
        raise DatasetError(f"data: no images under {root!r} (looked for {', '.join(IMAGE_SUFFIXES)})")
    by_folder = {name: index for index, name in enumerate(folders)}
    by_display = {display_name(name): index for index, name in enumerate(class_names)}
    rows, labelled = [], labels != "none"
    for path in relative:
        parts = path.split("/")
        label = -1
        if len(parts) >= 3:
            label = by_folder.get(parts[1], by_display.get(display_name(parts[1]), -1))
        labelled = labelled and label >= 0
        rows.append({"id": stable_id("predict", path), "path": path, "domain": parts[0] if len(parts) > 1 else "",
                     "label": label, "class_name": class_names[label] if label >= 0 else ""})
    if not labelled:
        for row in rows:
            row["label"], row["class_name"] = -1, ""
    return rows, labelled
