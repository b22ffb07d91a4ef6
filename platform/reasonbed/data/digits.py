"""Rotated digits: a small real-image benchmark built from scikit-learn's bundled handwritten digits.

Like DomainBed's RotatedMNIST, each domain is a disjoint share of the images rotated by one angle
(0, 15, 30, 45, 60, 75 degrees). The 8x8 digits are upscaled to `image_size` and written as PNGs in
DomainBed's layout, so the ordinary reader is what reads them. Deterministic for a seed.
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
    description="scikit-learn digits rotated per domain (RotatedMNIST-style)",
))


def generate(root: str, images_per_domain: int | None = None, image_size: int = 56, seed: int = 0,
             storage_options: Mapping[str, Any] | None = None) -> DatasetSpec:
    """Write the benchmark under `root`; each domain gets a disjoint share of the 1,797 digits."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = list(range(len(digits.target)))
    random.Random(seed).shuffle(order)
    share = len(order) // len(ANGLES)
    if images_per_domain is not None:
        share = min(share, images_per_domain)
    fs, base = storage.filesystem(root, storage_options)
    for domain_index, angle in enumerate(ANGLES):
        for position in order[domain_index * share:(domain_index + 1) * share]:
            pixels = (digits.images[position] * (255.0 / 16.0)).clip(0, 255).astype("uint8")
            image = Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.Resampling.BILINEAR)
            image = image.rotate(angle, resample=Image.Resampling.BILINEAR).convert("RGB")
            name = DIGIT_NAMES[int(digits.target[position])]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            fs.makedirs(f"{base}/{angle}/{name}", exist_ok=True)
            with fs.open(f"{base}/{angle}/{name}/{position:05d}.png", "wb") as handle:
                handle.write(buffer.getvalue())
    return SPEC
