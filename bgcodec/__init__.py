"""bgcodec: a learned image codec (BG-VAE) with a cjxl-like command line.

A small Python API::

    import bgcodec
    data = bgcodec.compress("photo.png", quality=80)   # or bytes, a file, a PIL image, an array; or lmbda=0.01
    image = bgcodec.decompress(data)                   # a PIL.Image.Image (L, LA, RGB or RGBA)

Importing this package is cheap: torch, numpy and Pillow are imported only
when :func:`compress` / :func:`decompress` first run.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from bgcodec.codec import Codec

__version__ = "0.4.0"

__all__ = ["__version__", "compress", "decompress"]

_codecs: dict[tuple[str | None, str], "Codec"] = {}
_codecs_lock = threading.Lock()


def _codec(weights: str | os.PathLike | None, device: str = "auto") -> "Codec":
    """The loaded Codec for a weights spec (None = shipped default) and device, loaded once per process."""
    key = (None if weights is None else os.path.abspath(os.fspath(weights)), device)
    with _codecs_lock:
        codec = _codecs.get(key)
        if codec is None:
            from bgcodec.codec import Codec

            codec = _codecs[key] = Codec.load(key[0], device=device)
        return codec


def _as_planes(image: Any) -> tuple[Any, dict[str, bytes]]:
    """What compress() accepts, as the planes the codec takes (the CLI's conversions) and the
    image's metadata (imageio.read_metadata; none for arrays)."""
    import numpy as np
    from PIL import Image

    from bgcodec import imageio

    if isinstance(image, Image.Image):
        return imageio.from_pil(image, keep_planes=True)[0], imageio.read_metadata(image)
    name = "<input>"
    if hasattr(image, "read"):
        name, image = str(getattr(image, "name", "<file>")), image.read()
    elif isinstance(image, (str, os.PathLike)):
        name, image = os.fspath(image), _read(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return imageio.load_image(data, keep_planes=True, name=name)[0], imageio.read_metadata(data)
    if isinstance(image, np.ndarray) or hasattr(image, "__array_interface__"):
        array = np.asarray(image)
        planes = array[..., None] if array.ndim == 2 else array
        if planes.ndim != 3 or planes.shape[2] not in (1, 2, 3, 4) or array.dtype != np.uint8:
            raise ValueError(f"expected an HxW or HxWxC uint8 array with C = 1..4 (gray, gray + alpha, RGB, "
                             f"RGBA), got {array.dtype} {array.shape}")
        return np.array(planes, order="C"), {}  # a private, writable copy
    raise TypeError(f"compress() takes a path, the bytes or a file object of an image file, a PIL image or a "
                    f"uint8 array, not {type(image).__name__}")


def _real(value: Any, name: str) -> None:
    import numbers

    if value is not None and (not isinstance(value, numbers.Real) or isinstance(value, bool)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} {value!r}")


def compress(
    image: Any,
    lmbda: float | None = None,
    *,
    quality: float | None = None,
    effort: int = 0,
    synthesis: str = "full",
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    strip: bool = False,
) -> bytes:
    """Compress an image to ``.bgv`` bytes.

    ``image`` is a path, the bytes or a file object of an image file, a PIL image, or a
    uint8 array (HxW gray, HxWx2 gray + alpha, HxWx3 RGB, HxWx4 RGBA); files and PIL images
    are converted as ``bgcodec encode`` converts them (EXIF orientation applied, alpha
    kept). Give either ``lmbda`` (CompressAI convention, within the weights' range) or
    ``quality`` (1..100); neither means ``lambdas.DEFAULT_QUALITY``. ``effort`` and
    ``synthesis`` are those of ``bgcodec encode``; ``weights`` selects a weights file
    (None: the shipped default) and ``device`` where the model runs (auto, cpu, cuda). The
    colour profile, EXIF and XMP of files and PIL images are kept unless ``strip``.

    Raises TypeError or ValueError for arguments of the wrong kind, and
    :class:`bgcodec.errors.BgcodecError` subclasses for unreadable images, out-of-range λ
    or unusable weights.
    """
    if lmbda is not None and quality is not None:
        raise ValueError("give lmbda or quality, not both")
    _real(lmbda, "lmbda")
    _real(quality, "quality")
    array, metadata = _as_planes(image)
    codec = _codec(weights, device)
    if lmbda is None:
        from bgcodec.lambdas import DEFAULT_QUALITY, quality_to_lambda

        lmbda = quality_to_lambda(DEFAULT_QUALITY if quality is None else quality, codec.lambda_range)
    return codec.encode(array, lmbda, effort=effort, synthesis=synthesis, metadata={} if strip else metadata)


def decompress(data: Any, *, weights: str | os.PathLike | None = None, device: str = "auto"):
    """Decompress a ``.bgv`` file to a ``PIL.Image.Image`` (mode L, LA, RGB or RGBA, as encoded).

    ``data`` is the file's bytes, its path, or a file object. ``weights`` must be the
    weights the file was compressed with. Raises :class:`bgcodec.errors.FormatError` for
    corrupt or foreign data.
    """
    from PIL import Image

    if isinstance(data, (str, os.PathLike)):
        name, data = os.fspath(data), _read(data)
    elif hasattr(data, "read"):
        name, data = str(getattr(data, "name", "<file>")), data.read()
    elif isinstance(data, (bytes, bytearray, memoryview)):
        name = "<input>"
    else:
        raise TypeError(f"decompress() takes the bytes, the path or a file object of a .bgv file, "
                        f"not {type(data).__name__}")
    from bgcodec import container

    planes = _codec(weights, device).decode(bytes(data), name)
    mode = ("L", "LA", "RGB", "RGBA")[planes.shape[2] - 1]
    image = Image.fromarray(planes[..., 0] if mode == "L" else planes, mode)
    image.info.update(_pil_info(container.unpack(bytes(data), name)[0]))
    return image


def _read(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        from bgcodec.errors import BgcodecError

        raise BgcodecError(f"{os.fspath(path)}: cannot read ({exc.strerror})") from None


def _pil_info(header: Any) -> dict[str, bytes]:
    """A .bgv header's metadata under the ``info`` keys Pillow's writers use."""
    keys = {"icc": "icc_profile", "exif": "exif", "xmp": "xmp"}
    return {key: getattr(header, field) for field, key in keys.items() if getattr(header, field) is not None}
