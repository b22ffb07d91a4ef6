"""Label-preserving image transforms, for the `consistency` reward's second view of an image.

Each is a function PIL.Image -> PIL.Image registered by name in `TRANSFORMS`. Choose one that keeps
the label of the dataset at hand: `hflip` is fine for objects and animals but not for digits (use
`crop` or `grayscale` there).
"""

from __future__ import annotations

from typing import Any

from reasonbed.registry import Registry

TRANSFORMS: Registry[Any] = Registry("image transform")


@TRANSFORMS.register("hflip")
def hflip(image: Any) -> Any:
    """Mirror left-right."""
    from PIL import ImageOps

    return ImageOps.mirror(image)


@TRANSFORMS.register("crop")
def center_crop(image: Any, keep: float = 0.85) -> Any:
    """Keep the central `keep` fraction of each side and resize back to the original size."""
    width, height = image.size
    dx, dy = int(width * (1 - keep) / 2), int(height * (1 - keep) / 2)
    return image.crop((dx, dy, width - dx, height - dy)).resize((width, height))


@TRANSFORMS.register("grayscale")
def grayscale(image: Any) -> Any:
    """Drop colour (kept as a three-channel image)."""
    return image.convert("L").convert("RGB")
