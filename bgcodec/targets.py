"""Choosing λ to hit a target: a file size, a bit rate or a PSNR, by bisection in ln λ with
the real encoder (as ``cwebp -size`` does).

Size and bpp targets are never exceeded: the search keeps the largest file at or under the
target and stops once it is within ``TOLERANCE`` of it, or at the end of the weights' λ
range. A PSNR target gives the smallest file found whose decoded image reaches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .codec import Codec

TOLERANCE = 0.01
"""How close under a size or bpp target is close enough (relative)."""
PSNR_TOLERANCE = 0.05
"""How far above a PSNR target is close enough (dB)."""
MAX_STEPS = 14
"""Encodes per image at most: bisection halves ln λ's range each step."""
KINDS = ("size", "bpp", "psnr")


@dataclass(frozen=True)
class Target:
    """What the encoder aims at: ``kind`` is "size" (bytes), "bpp" or "psnr" (dB)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not self.value > 0 or not math.isfinite(self.value):
            raise ValueError(f"a target is one of {KINDS} with a positive value, got {self.kind} {self.value}")


@dataclass
class Hit:
    """The chosen encode: its bytes, its λ (CLI convention), and whether it met the target."""

    data: bytes
    lmbda: float
    met: bool


def encode_to_target(codec: "Codec", image: np.ndarray, target: Target, **options: Any) -> Hit:
    """Search λ over the codec's range for ``target``; ``options`` go to ``Codec.encode``.

    File size and PSNR both grow with λ. A size or bpp target is met at small λ, so the
    search keeps the largest λ that meets it; a PSNR target is met at large λ, so it keeps
    the smallest.
    """
    pixels = image.shape[0] * image.shape[1]

    def measure(log_lmbda: float) -> tuple[Hit, float]:
        data, decoded = codec.encode(image, math.exp(log_lmbda), return_reconstruction=True, **options)
        value = _psnr(image, decoded) if target.kind == "psnr" else len(data) * (1 if target.kind == "size" else
                                                                                   8 / pixels)
        met = value >= target.value if target.kind == "psnr" else value <= target.value
        return Hit(data, math.exp(log_lmbda), met), value

    quality_side = target.kind == "psnr"  # where the target is met: at the large-λ end
    lo, hi = (math.log(v) for v in codec.lambda_range)
    near, far = (hi, lo) if quality_side else (lo, hi)  # the end that meets it most easily, and the other
    best, _ = measure(near)
    if not best.met:
        return best  # not even at the end of the range
    hit, _ = measure(far)
    if hit.met:
        return hit  # met across the whole range: the other end is the best
    for _ in range(MAX_STEPS - 2):
        middle = 0.5 * (near + far)
        hit, value = measure(middle)
        if hit.met:
            best, near = hit, middle
            if _close_enough(value, target):
                break
        else:
            far = middle
    return best


def _close_enough(value: float, target: Target) -> bool:
    if target.kind == "psnr":
        return value - target.value <= PSNR_TOLERANCE
    return value >= target.value * (1 - TOLERANCE)


def _psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR over the colour channels (alpha is lossless and left out)."""
    colour = slice(0, 1) if original.ndim == 3 and original.shape[2] in (1, 2) else slice(0, 3)
    a = np.asarray(original, np.float64).reshape(*original.shape[:2], -1)[..., colour]
    b = np.asarray(decoded, np.float64).reshape(*decoded.shape[:2], -1)[..., colour]
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
