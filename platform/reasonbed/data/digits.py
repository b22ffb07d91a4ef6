"""Rotated digits: a small real-image benchmark built from 1,797 handwritten digits shipped with the package.

Like DomainBed's RotatedMNIST, each domain is a disjoint share of the images rotated by one angle
(0, 15, 30, 45, 60, 75 degrees). The 8x8 digits are upscaled to `image_size` and written as PNGs in
DomainBed's layout, so the ordinary reader is what reads them. Deterministic for a seed.

`digits.csv.gz` (one digit per row: 64 pixels in 0..16, then the label) is the test set of the UCI
"Optical Recognition of Handwritten Digits" dataset (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0,
https://doi.org/10.24432/C50P49), byte for byte the copy scikit-learn 1.9 bundles for its `load_digits`
(sha256 09f66e6d...), which this module read until scikit-learn stopped being a dependency: the same images.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from typing import Any

from reasonbed import storage
from reasonbed.data.specs import DatasetSpec, register_spec

ANGLES = (0, 15, 30, 45, 60, 75)
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

SPEC = register_spec(DatasetSpec(
    name="rotated_digits",
    domains=tuple(str(angle) for angle in ANGLES),
    classes=DIGIT_NAMES,
    hierarchy={"even": ("zero", "two", "four", "six", "eight"), "odd": ("one", "three", "five", "seven", "nine")},
    description="UCI handwritten digits rotated per domain (RotatedMNIST-style)",
))


def generate(root: str, images_per_domain: int | None = None, image_size: int = 56, seed: int = 0,
             storage_options: Mapping[str, Any] | None = None) -> DatasetSpec:
    """Write the benchmark under `root`; each domain gets a disjoint share of the 1,797 digits."""
    from PIL import Image

    images, labels = load_digits()
    order = list(range(len(labels)))
    random.Random(seed).shuffle(order)
    share = len(order) // len(ANGLES)
    if images_per_domain is not None:
        share = min(share, images_per_domain)
    fs, base = storage.filesystem(root, storage_options)
    for domain_index, angle in enumerate(ANGLES):
        for position in order[domain_index * share:(domain_index + 1) * share]:
            pixels = (images[position] * (255.0 / 16.0)).clip(0, 255).astype("uint8")
            image = Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.Resampling.BILINEAR)
            image = image.rotate(angle, resample=Image.Resampling.BILINEAR).convert("RGB")
            name = DIGIT_NAMES[int(labels[position])]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            fs.makedirs(f"{base}/{angle}/{name}", exist_ok=True)
            with fs.open(f"{base}/{angle}/{name}/{position:05d}.png", "wb") as handle:
                handle.write(buffer.getvalue())
    return SPEC


def load_digits() -> tuple[Any, Any]:
    """The shipped digits: (images, labels), images (1797, 8, 8) floats in 0..16, labels (1797,) ints."""
    import gzip
    from importlib.resources import files

    import numpy as np

    with files("reasonbed.data").joinpath("digits.csv.gz").open("rb") as packed, gzip.open(packed, "rt") as text:
        table = np.loadtxt(text, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
