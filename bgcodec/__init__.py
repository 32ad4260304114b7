"""bgcodec: a learned image codec (BG-VAE) with a cjxl-like command line.

A small Python API::

    import bgcodec
    data = bgcodec.compress("photo.png", quality=80)   # or an array / PIL image, or lmbda=0.01
    image = bgcodec.decompress(data)                   # a PIL.Image.Image (RGB)

Importing this package is cheap: torch, numpy and Pillow are imported only
when :func:`compress` / :func:`decompress` first run.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from bgcodec.codec import Codec

__version__ = "0.2.0"

__all__ = ["__version__", "compress", "decompress"]

_codecs: dict[str | None, "Codec"] = {}
_codecs_lock = threading.Lock()


def _codec(weights: str | os.PathLike | None) -> "Codec":
    """The loaded Codec for a weights spec (None = shipped default), loaded once per process."""
    key = None if weights is None else os.path.abspath(os.fspath(weights))
    with _codecs_lock:
        codec = _codecs.get(key)
        if codec is None:
            from bgcodec.codec import Codec

            codec = _codecs[key] = Codec.load(key)
        return codec


def _as_array(image: Any):
    import numpy as np
    from PIL import Image

    from bgcodec import imageio

    if isinstance(image, Image.Image):
        return imageio.from_pil(image)[0]
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        return imageio.load_image(image)[0]
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {array.dtype} {array.shape}")
    return np.array(array, order="C")  # a private, writable copy


def compress(
    image: Any,
    lmbda: float | None = None,
    *,
    quality: float | None = None,
    weights: str | os.PathLike | None = None,
) -> bytes:
    """Compress an image to ``.bgv`` bytes.

    ``image`` is a PIL image, an HxWx3 ``uint8`` RGB array, a path, or the
    bytes of an image file.  Give either ``lmbda`` (CompressAI convention,
    within the weights' range) or ``quality`` (1..100); neither means
    ``lambdas.DEFAULT_QUALITY``.  ``weights`` selects a weights file (None: the shipped default).

    Raises :class:`bgcodec.errors.BgcodecError` subclasses for bad inputs,
    out-of-range λ or unusable weights.
    """
    if lmbda is not None and quality is not None:
        raise ValueError("give lmbda or quality, not both")
    array = _as_array(image)
    codec = _codec(weights)
    if lmbda is None:
        from bgcodec.lambdas import DEFAULT_QUALITY, quality_to_lambda

        lmbda = quality_to_lambda(DEFAULT_QUALITY if quality is None else quality, codec.lambda_range)
    return codec.encode(array, lmbda)


def decompress(data: bytes, *, weights: str | os.PathLike | None = None):
    """Decompress ``.bgv`` bytes to an RGB ``PIL.Image.Image``.

    ``weights`` must be the weights the data was compressed with.  Raises
    :class:`bgcodec.errors.FormatError` for corrupt or foreign data.
    """
    from PIL import Image

    return Image.fromarray(_codec(weights).decode(bytes(data)))
