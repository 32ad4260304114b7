"""Generated training crops of what photos of film and the web rarely hold: clean flat
colour, smooth shading, soft focus, sharp edges and line art.

Each crop is a random picture: a flat or graded background, a few flat or graded shapes
(rectangles, discs, polygons, strokes, text), sometimes with thin outlines, then with some
probability a blur (soft focus) and a faint noise (the sensor noise of a photographed flat
patch is about half a level). Shapes are drawn at twice the size and halved, so edges are
antialiased as in a rendered or photographed image.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

BLUR_PROBABILITY = 0.3
NOISE_PROBABILITY = 0.5
MAX_NOISE_SIGMA = 1.5
TEXT = "The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLM"


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Saturated colours most of the time, greys and pastels otherwise."""
    saturation = rng.uniform(0.6, 1.0) if rng.random() < 0.7 else rng.uniform(0.0, 0.4)
    rgb = colorsys.hsv_to_rgb(rng.random(), saturation, rng.uniform(0.15, 1.0))
    return tuple(int(round(255 * v)) for v in rgb)


def gradient(size: int, rng: np.random.Generator) -> Image.Image:
    """A linear or radial blend of two random colours."""
    y, x = np.mgrid[0:size, 0:size] / size
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * x + np.sin(angle) * y
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.hypot(x - cx, y - cy)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    a, b = np.array(random_colour(rng), float), np.array(random_colour(rng), float)
    return Image.fromarray(np.round(a + (b - a) * t[..., None]).astype(np.uint8))


def _fill(size: int, rng: np.random.Generator) -> Image.Image:
    return gradient(size, rng) if rng.random() < 0.3 else Image.new("RGB", (size, size), random_colour(rng))


def _shape_mask(size: int, rng: np.random.Generator) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    kind = rng.integers(5)
    x0, y0 = rng.integers(-size // 4, size, 2)
    w, h = rng.integers(size // 16, size // 1.5, 2)
    box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
    if kind == 0:
        draw.rectangle(box, fill=255)
    elif kind == 1:
        draw.ellipse(box, fill=255)
    elif kind == 2:
        draw.polygon([tuple(int(v) for v in rng.integers(-size // 4, size * 5 // 4, 2)) for _ in range(rng.integers(3, 7))],
                     fill=255)
    elif kind == 3:
        points = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(rng.integers(2, 5))]
        draw.line(points, fill=255, width=int(rng.integers(1, max(2, size // 32))))
    else:
        font = ImageFont.load_default(size=float(rng.integers(max(8, size // 40), max(9, size // 8))))
        start = int(rng.integers(len(TEXT) // 2))
        draw.text((int(x0), int(y0)), TEXT[start:start + int(rng.integers(4, 30))], fill=255, font=font)
    return mask


def synthetic_picture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A size×size×3 uint8 picture (see the module doc)."""
    big = 2 * size
    picture = _fill(big, rng)
    for _ in range(int(rng.integers(2, 12))):
        mask = _shape_mask(big, rng)
        if rng.random() < 0.3:
            outline = mask.filter(ImageFilter.MaxFilter(2 * int(rng.integers(1, 3)) + 1))
            picture.paste(Image.new("RGB", (big, big), random_colour(rng)), (0, 0), outline)
        picture.paste(_fill(big, rng), (0, 0), mask)
    picture = picture.resize((size, size), Image.BOX)
    if rng.random() < BLUR_PROBABILITY:
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, size / 24)))
    image = np.asarray(picture, dtype=np.float64)
    if rng.random() < NOISE_PROBABILITY:
        image = image + rng.normal(0, rng.uniform(0, MAX_NOISE_SIGMA), image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
