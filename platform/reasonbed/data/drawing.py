"""The drawing code shared by the synthetic benchmark and the tiny models' pretraining corpus.

`render(shape, colour, count, style, size, rng)` draws `count` figures of one shape and colour in a
style; `render_digit(digit, size, rng, angle)` draws a digit white on black, in jittered pen
strokes or in PIL's built-in scalable font. The benchmark (`reasonbed.data.synthetic`) uses the first six shapes, six colours
and four styles with the default layout; the pretraining corpus (`reasonbed.models.corpus`) draws
from all of them (more shapes, colours, styles, counts up to four, a looser layout) and from digits.
Every random choice comes from the `rng` passed in, so a seed fixes every pixel; the benchmark's
own calls consume `rng` exactly as before this module existed, so its files are unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

BENCHMARK_SHAPES = ("circle", "cross", "ring", "square", "star", "triangle")
# Extra shapes are chosen to look unlike the benchmark's six even at 56 pixels (no diamond, hexagon, oval).
EXTRA_SHAPES = ("arrow", "bar", "bolt", "crescent", "heart", "semicircle")
ALL_SHAPES = BENCHMARK_SHAPES + EXTRA_SHAPES
BENCHMARK_STYLES = ("cartoon", "painting", "photo", "sketch")
EXTRA_STYLES = ("blueprint", "mosaic", "neon", "silhouette")
ALL_STYLES = BENCHMARK_STYLES + EXTRA_STYLES
# Styles that draw every figure without its colour (black, white or dark ink): the colour is "none".
COLOURLESS_STYLES = ("blueprint", "silhouette", "sketch")
BENCHMARK_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40), "green": (46, 160, 67), "blue": (40, 90, 214), "yellow": (235, 200, 30),
    "purple": (140, 60, 180), "orange": (240, 130, 30),
}
ALL_COLOURS: dict[str, tuple[int, int, int]] = {
    **BENCHMARK_COLOURS, "pink": (240, 120, 190), "brown": (130, 80, 40), "cyan": (40, 200, 210),
    "grey": (128, 128, 128),
}
MAX_COUNT = 4
SHAPE_FACTS: dict[str, str] = {
    "circle": "a filled round outline with no corners",
    "cross": "two bars crossing at right angles, twelve corners",
    "ring": "a round outline with an empty centre",
    "square": "four equal sides and four right-angle corners",
    "star": "five pointed tips around a centre",
    "triangle": "three straight sides and three corners",
    "arrow": "a shaft ending in one pointed head",
    "bar": "one long, thin block with straight sides",
    "bolt": "a zigzag of sharp bends",
    "crescent": "a curved sliver with two points",
    "heart": "two round lobes above one point",
    "semicircle": "a round arc closed by one straight side",
}
_SLOTS = {1: [(0.5, 0.5)], 2: [(0.28, 0.5), (0.72, 0.5)], 3: [(0.25, 0.3), (0.75, 0.3), (0.5, 0.74)],
          4: [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73)]}
_RADIUS = {1: 0.30, 2: 0.2, 3: 0.16, 4: 0.15}
SCALE = 4  # draw large, then downsample: smooth edges at small sizes

Point = tuple[float, float]


def _angles(start: float, stop: float, steps: int) -> list[float]:
    return [start + (stop - start) * i / steps for i in range(steps + 1)]


def _outline(shape: str, r: float) -> list[Point]:
    """The polygon of a shape around (0, 0) with radius r (before rotation)."""
    if shape == "square":
        s = r * 0.8
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "triangle":
        return [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.42
            a = -math.pi / 2 + i * math.pi / 5
            points.append((radius * math.cos(a), radius * math.sin(a)))
        return points
    if shape == "cross":
        w, s = r * 0.33, r
        return [(-w, -s), (w, -s), (w, -w), (s, -w), (s, w), (w, w), (w, s), (-w, s), (-w, w),
                (-s, w), (-s, -w), (-w, -w)]
    if shape == "bar":
        return [(-r, -r * 0.22), (r, -r * 0.22), (r, r * 0.22), (-r, r * 0.22)]
    if shape == "bolt":
        return [(-r * 0.2, -r), (r * 0.45, -r), (r * 0.05, -r * 0.15), (r * 0.5, -r * 0.15), (-r * 0.35, r),
                (-r * 0.05, r * 0.1), (-r * 0.5, r * 0.1)]
    if shape == "crescent":  # the outer arc, then the inner arc back
        outer = [(r * math.cos(a), r * math.sin(a)) for a in _angles(math.pi * 0.35, math.pi * 1.65, 14)]
        inner = [(r * 0.35 + r * 0.8 * math.cos(a), r * 0.8 * math.sin(a)) for a in _angles(math.pi * 1.55, math.pi * 0.45, 14)]
        return outer + inner
    if shape == "semicircle":
        return [(r * math.cos(a), r * 0.35 - r * math.sin(a)) for a in _angles(0.0, math.pi, 16)]
    if shape == "arrow":
        w = r * 0.22
        return [(-r, -w), (r * 0.2, -w), (r * 0.2, -r * 0.6), (r, 0), (r * 0.2, r * 0.6), (r * 0.2, w), (-r, w)]
    if shape == "heart":
        points = []
        for i in range(24):
            t = 2 * math.pi * i / 24
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x * r / 17, -y * r / 17 + r * 0.1))
        return points
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(ALL_SHAPES)}")


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[Point]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in _outline(shape, r)]


def draw_shape(draw: Any, shape: str, box: tuple[float, float, float, float], fill: Any, outline: Any,
               width: int, angle: float) -> None:
    """One figure inside `box` (x0, y0, x1, y1), rotated by `angle` radians."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "ring":
        draw.ellipse(box, fill=None, outline=fill if fill is not None else outline, width=max(width, int(r * 0.35)))
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=fill, outline=outline, width=width)


def _noise(size: int, sigma: float, rng: random.Random) -> Any:
    """Seeded grey Gaussian noise around mid-grey (PIL's effect_noise is not seedable)."""
    import numpy as np
    from PIL import Image

    values = np.random.default_rng(rng.getrandbits(32)).normal(128.0, sigma, (size, size))
    return Image.fromarray(values.clip(0, 255).astype("uint8"), mode="L").convert("RGB")


# ------------------------------------------------------------------ styles: background, figure, finish
def _bg_sketch(canvas: int, rng: random.Random) -> Any:
    from PIL import Image

    return Image.new("RGB", (canvas, canvas), (250, 250, 250))


def _bg_cartoon(canvas: int, rng: random.Random) -> Any:
    from PIL import Image

    return Image.new("RGB", (canvas, canvas), rng.choice([(255, 240, 200), (200, 235, 255), (225, 255, 215)]))


def _bg_photo(canvas: int, rng: random.Random) -> Any:
    from PIL import Image

    image = Image.linear_gradient("L").resize((canvas, canvas)).convert("RGB")
    tint = Image.new("RGB", (canvas, canvas), (rng.randint(90, 160), rng.randint(90, 160), rng.randint(90, 160)))
    return Image.blend(image, tint, 0.6)


def _bg_painting(canvas: int, rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (canvas, canvas), (rng.randint(120, 200),) * 3)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(canvas), rng.randrange(canvas)
        w = rng.randint(canvas // 16, canvas // 5)
        tone = tuple(rng.randint(60, 230) for _ in range(3))
        draw.ellipse((x - w, y - w // 3, x + w, y + w // 3), fill=tone)
    return image


def _bg_dark(canvas: int, rng: random.Random) -> Any:
    from PIL import Image

    return Image.new("RGB", (canvas, canvas), tuple(rng.randint(0, 35) for _ in range(3)))


def _bg_blueprint(canvas: int, rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (canvas, canvas), (rng.randint(20, 40), rng.randint(60, 90), rng.randint(130, 170)))
    draw = ImageDraw.Draw(image)
    step = canvas // rng.choice((6, 8))
    for offset in range(0, canvas, step):
        draw.line((offset, 0, offset, canvas), fill=(90, 130, 200), width=SCALE // 2)
        draw.line((0, offset, canvas, offset), fill=(90, 130, 200), width=SCALE // 2)
    return image


def _bg_pastel(canvas: int, rng: random.Random) -> Any:
    from PIL import Image

    return Image.new("RGB", (canvas, canvas), tuple(rng.randint(190, 250) for _ in range(3)))


def _fig_sketch(draw: Any, shape: str, box: Any, rgb: Any, angle: float) -> None:
    draw_shape(draw, shape, box, None if shape != "ring" else (20, 20, 20), (20, 20, 20), SCALE * 2, angle)


def _fig_cartoon(draw: Any, shape: str, box: Any, rgb: Any, angle: float) -> None:
    draw_shape(draw, shape, box, rgb, (0, 0, 0), SCALE * 3, angle)


def _fig_photo(draw: Any, shape: str, box: Any, rgb: Any, angle: float) -> None:
    shade = tuple(max(0, c - 50) for c in rgb)
    draw_shape(draw, shape, box, shade, None, 1, angle)
    inner = (box[0] + 2 * SCALE, box[1] + 2 * SCALE, box[2] - SCALE, box[3] - SCALE)
    draw_shape(draw, shape, inner, rgb, None, 1, angle)


def _fig_flat(draw: Any, shape: str, box: Any, rgb: Any, angle: float) -> None:
    draw_shape(draw, shape, box, rgb, None, 1, angle)


def _fig_neon(draw: Any, shape: str, box: Any, rgb: Any, angle: float) -> None:
    draw_shape(draw, shape, box, None if shape != "ring" else rgb, rgb, SCALE * 2, angle)


def _fig_blueprint(draw: Any, shape: str, box: Any, rgb: Any, angle: float) -> None:
    draw_shape(draw, shape, box, None if shape != "ring" else (245, 245, 255), (245, 245, 255), SCALE * 2, angle)


def _fig_silhouette(draw: Any, shape: str, box: Any, rgb: Any, angle: float) -> None:
    draw_shape(draw, shape, box, (25, 25, 25), None, 1, angle)


def _finish_none(image: Any, canvas: int, rng: random.Random) -> Any:
    return image


def _finish_painting(image: Any, canvas: int, rng: random.Random) -> Any:
    from PIL import Image, ImageFilter

    return Image.blend(image, _noise(canvas, 60, rng), 0.25).filter(ImageFilter.GaussianBlur(SCALE))


def _finish_photo(image: Any, canvas: int, rng: random.Random) -> Any:
    from PIL import Image

    return Image.blend(image, _noise(canvas, 25, rng), 0.12)


def _finish_neon(image: Any, canvas: int, rng: random.Random) -> Any:
    from PIL import ImageChops, ImageFilter

    return ImageChops.lighter(image, image.filter(ImageFilter.GaussianBlur(SCALE * 2)))


def _finish_mosaic(image: Any, canvas: int, rng: random.Random) -> Any:
    from PIL import Image

    tiles = rng.choice((10, 12, 14))
    return image.resize((tiles, tiles), Image.Resampling.BOX).resize((canvas, canvas), Image.Resampling.NEAREST)


Background = Callable[[int, random.Random], Any]
Figure = Callable[[Any, str, Any, Any, float], None]
Finish = Callable[[Any, int, random.Random], Any]
# style -> (background, figure, finish); each consumes rng in a fixed order.
STYLE_DRAWERS: dict[str, tuple[Background, Figure, Finish]] = {
    "sketch": (_bg_sketch, _fig_sketch, _finish_none),
    "cartoon": (_bg_cartoon, _fig_cartoon, _finish_none),
    "photo": (_bg_photo, _fig_photo, _finish_photo),
    "painting": (_bg_painting, _fig_flat, _finish_painting),
    "blueprint": (_bg_blueprint, _fig_blueprint, _finish_none),
    "mosaic": (_bg_pastel, _fig_flat, _finish_mosaic),
    "neon": (_bg_dark, _fig_neon, _finish_neon),
    "silhouette": (_bg_pastel, _fig_silhouette, _finish_none),
}


def render(shape: str, colour: str, count: int, style: str, size: int, rng: random.Random,
           scale: float = 1.0, jitter: float = 0.04, tilt: float = 0.25) -> Any:
    """One image of `count` figures of one shape and colour in one style (PIL RGB image, size x size).

    `scale` multiplies the figures' radius, `jitter` is the largest shift of a figure from its slot
    (fraction of the side) and `tilt` the largest rotation (radians); the defaults are the benchmark's.
    """
    from PIL import Image, ImageDraw

    if style not in STYLE_DRAWERS:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLE_DRAWERS)}")
    if count not in _SLOTS:
        raise ValueError(f"count must be 1..{MAX_COUNT}, got {count!r}")
    background, figure, finish = STYLE_DRAWERS[style]
    canvas = size * SCALE
    rgb = ALL_COLOURS[colour]
    image = background(canvas, rng)
    draw = ImageDraw.Draw(image)
    radius = canvas * _RADIUS[count] * scale
    for fx, fy in _SLOTS[count]:
        cx = fx * canvas + rng.uniform(-jitter, jitter) * canvas
        cy = fy * canvas + rng.uniform(-jitter, jitter) * canvas
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        figure(draw, shape, box, rgb, rng.uniform(-tilt, tilt))
    image = finish(image, canvas, rng)
    return image.resize((size, size), Image.Resampling.LANCZOS)


# Each digit as pen strokes in a unit box (x right, y down): polylines, ellipses as (cx, cy, rx, ry).
_HAND_STROKES: dict[int, list[Any]] = {
    0: [(0.5, 0.5, 0.28, 0.4)],
    1: [[(0.36, 0.24), (0.52, 0.1), (0.52, 0.9)]],
    2: [[(0.26, 0.28), (0.38, 0.13), (0.58, 0.1), (0.73, 0.22), (0.7, 0.42), (0.46, 0.64), (0.24, 0.9), (0.78, 0.9)]],
    3: [[(0.26, 0.16), (0.55, 0.1), (0.72, 0.22), (0.66, 0.42), (0.45, 0.5), (0.68, 0.58), (0.75, 0.76),
         (0.58, 0.9), (0.26, 0.86)]],
    4: [[(0.62, 0.9), (0.62, 0.1), (0.2, 0.64), (0.8, 0.64)]],
    5: [[(0.74, 0.1), (0.32, 0.1), (0.28, 0.46), (0.52, 0.4), (0.72, 0.52), (0.73, 0.74), (0.55, 0.9), (0.26, 0.84)]],
    6: [[(0.66, 0.1), (0.42, 0.24), (0.28, 0.52), (0.3, 0.8), (0.5, 0.9), (0.68, 0.8), (0.7, 0.6), (0.5, 0.5),
         (0.3, 0.6)]],
    7: [[(0.22, 0.1), (0.78, 0.1), (0.42, 0.9)]],
    8: [(0.5, 0.29, 0.2, 0.19), (0.5, 0.7, 0.25, 0.2)],
    9: [(0.5, 0.31, 0.22, 0.2), [(0.72, 0.31), (0.66, 0.9)]],
}


def _hand_glyph(digit: int, canvas: int, rng: random.Random) -> Any:
    """A digit drawn with jittered pen strokes, a random slant, width and thickness (L image)."""
    from PIL import Image, ImageDraw

    glyph = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(glyph)
    slant, squeeze, turn = rng.uniform(-0.3, 0.3), rng.uniform(0.65, 1.1), math.radians(rng.uniform(-8, 8))
    width = rng.randint(canvas // 14, canvas // 7)

    def place(x: float, y: float) -> tuple[float, float]:
        x, y = (x - 0.5) * squeeze + slant * (0.5 - y), y - 0.5
        x, y = x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)
        return ((x * 0.8 + 0.5) * canvas, (y * 0.8 + 0.5) * canvas)

    for stroke in _HAND_STROKES[digit]:
        if isinstance(stroke, tuple):  # an ellipse: a closed polyline
            cx, cy, rx, ry = stroke
            steps = 18
            stroke = [(cx + rx * math.cos(2 * math.pi * i / steps), cy + ry * math.sin(2 * math.pi * i / steps))
                      for i in range(steps + 1)]
        points = [place(x + rng.gauss(0, 0.025), y + rng.gauss(0, 0.025)) for x, y in stroke]
        draw.line(points, fill=255, width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return glyph


def _font_glyph(digit: int, canvas: int, rng: random.Random) -> Any:
    """A digit of PIL's built-in scalable font, a random weight and shear (L image)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=rng.randint(70, 100) * canvas // 128)
    glyph = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(glyph).text((canvas / 2, canvas / 2), str(digit), fill=255, font=font, anchor="mm",
                               stroke_width=rng.randint(1, 6) * canvas // 128, stroke_fill=255)
    shear = rng.uniform(-0.3, 0.3)
    return glyph.transform((canvas, canvas), Image.Transform.AFFINE, (1, shear, -shear * canvas / 2, 0, 1, 0),
                           resample=Image.Resampling.BILINEAR)


DIGIT_HANDS = ("hand", "font")


def render_digit(digit: int, size: int, rng: random.Random, angle: float, blur_side: int = 8,
                 hand: str = "hand") -> Any:
    """A digit, white on black, filling the frame, rotated by `angle` degrees (PIL RGB image).

    `hand` "hand" draws it with jittered pen strokes, "font" with PIL's built-in scalable font. The
    glyph is shrunk to `blur_side` pixels and scaled back up, which leaves the blocky blur of small
    scanned digits.
    """
    from PIL import Image

    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, got {digit!r}")
    if hand not in DIGIT_HANDS:
        raise ValueError(f"hand must be one of {', '.join(DIGIT_HANDS)}, got {hand!r}")
    canvas = 128
    glyph = (_hand_glyph if hand == "hand" else _font_glyph)(digit, canvas, rng)
    box = glyph.getbbox() or (0, 0, canvas, canvas)
    margin = rng.randint(0, 10)
    side = max(box[2] - box[0], box[3] - box[1]) + 2 * margin
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    glyph = glyph.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    glyph = glyph.resize((blur_side, blur_side), Image.Resampling.BOX)
    glyph = glyph.resize((size, size), Image.Resampling.BILINEAR)
    return glyph.rotate(angle, resample=Image.Resampling.BILINEAR).convert("RGB")
