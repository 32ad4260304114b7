"""Reading and writing ordinary image files (Pillow + numpy, no torch).

The codec works on HxWx3 ``uint8`` RGB arrays.  :func:`load_image` turns
whatever Pillow can read into that, and says what it had to change (a list of
notes meant for the user); :func:`save_image` writes such an array in the
format the target's extension asks for.

Every failure that is the input's fault raises :class:`~bgcodec.errors.ImageError`
with a complete one-line message that starts with the input's name.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from bgcodec.errors import ImageError, one_line
from bgcodec.resources import check_memory

DEFAULT_MAX_PIXELS = 256 * 2**20
"""Largest accepted width·height (256 Mi pixels, far above 8K x 8K = 32 Mi)."""

# Our own limit (``max_pixels``, checked from the header before any pixel is
# decoded) replaces Pillow's decompression-bomb check, which would otherwise
# warn from 89 Mpx and refuse from 179 Mpx, i.e. below our default limit.
Image.MAX_IMAGE_PIXELS = None

# Pillow reports these as a catch-all for broken files (truncated data,
# corrupt headers, decoder errors).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".webp")
"""What :func:`find_images` takes for an image file (any case)."""


def find_images(folders: Sequence[str | os.PathLike], limit: int | None = None) -> list[Path]:
    """The image files below ``folders`` (recursive), each folder's sorted by path; the first
    ``limit``. Raises ImageError for a folder that is not one and when there are no images."""
    files: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise ImageError(f"{folder}: not a directory")
        files += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImageError(f"{', '.join(map(str, folders))}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files[:limit]


def _source_name(source: object, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<input>"
    return os.fspath(source)  # type: ignore[arg-type]


def load_image(
    source: str | bytes | os.PathLike,
    *,
    drop_alpha: bool = False,
    keep_planes: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    memory_per_pixel: int = 0,
    name: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Read an image file into an HxWx3 ``uint8`` RGB array, or with ``keep_planes`` into
    HxWxC with the image's own planes: C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.

    ``source`` is a path, or the file's content as bytes (e.g. read from
    stdin).  ``name`` is how the input is called in messages (default: the
    path, or ``"<input>"`` for bytes).  ``max_pixels`` (None: no limit) and the
    memory that coding the image will take (``memory_per_pixel``, see
    bgcodec.resources) are checked from the header before any pixel is decoded.
    PNG data that ends before the last row is refused.

    An alpha channel is refused unless ``drop_alpha`` drops it or ``keep_planes`` keeps it.
    Returns the array and a list of notes describing the conversions made
    (EXIF orientation applied, grayscale/palette/CMYK/16-bit converted, alpha
    dropped, first frame of several used).  Raises ImageError with a
    one-line message starting with ``name``.
    """
    name = _source_name(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ImageError(f"{name}: cannot read ({exc.strerror or one_line(exc)})") from None
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (cannot identify image file)") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: corrupt or unsupported image ({one_line(exc)})") from None
    with img:
        _check_size(img, name, max_pixels, memory_per_pixel)
        if img.format == "PNG" and _png_rows_missing(data):
            raise ImageError(f"{name}: truncated image data (the PNG ends before its last row)")
        return _convert_opened(img, name, drop_alpha=drop_alpha, keep_planes=keep_planes)


METADATA = ("icc", "exif", "xmp")
"""What bgcodec keeps of an image file besides its pixels: colour profile, EXIF, XMP."""


def read_metadata(source: bytes | Image.Image) -> dict[str, bytes]:
    """The ICC profile, EXIF block and XMP packet an image file (its bytes, or the opened
    image) carries, each that is present. EXIF orientation is set to 1, because the pixels
    are stored upright. Unreadable EXIF is left out."""
    img = Image.open(io.BytesIO(source)) if isinstance(source, (bytes, bytearray)) else source
    found: dict[str, bytes] = {}
    if img.info.get("icc_profile"):
        found["icc"] = bytes(img.info["icc_profile"])
    try:
        exif = img.getexif()
        if len(exif):
            if exif.get(0x0112, 1) != 1:
                exif[0x0112] = 1
            found["exif"] = exif.tobytes()
    except Exception:  # malformed EXIF: load_image notes it; nothing to keep
        pass
    xmp = img.info.get("xmp")
    if xmp:
        found["xmp"] = xmp.encode() if isinstance(xmp, str) else bytes(xmp)
    return found


def _check_size(img: Image.Image, name: str, max_pixels: int | None, memory_per_pixel: int) -> None:
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name}: image too large ({width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,} pixels)"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: empty image ({width}x{height})")
    if memory_per_pixel:
        check_memory(width, height, memory_per_pixel, name, "coding")


def _png_rows_missing(data: bytes) -> bool:
    """Whether a PNG's image data inflates to fewer bytes than its header's rows need (Pillow
    fills such images up with black without a word)."""
    try:
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
        bits = depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    except (struct.error, KeyError):
        return False  # Pillow read it; leave odd headers to Pillow
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for y0, x0, dy, dx in passes:
        rows, columns = -(-(height - y0) // dy), -(-(width - x0) // dx)
        if rows > 0 and columns > 0:
            expected += rows * (1 + (columns * bits + 7) // 8)
    inflater, inflated, pos = zlib.decompressobj(), 0, 8
    while pos + 8 <= len(data) and inflated < expected:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            chunk = data[pos + 8:pos + 8 + length]
            try:
                while chunk and inflated < expected:
                    inflated += len(inflater.decompress(chunk, 1 << 20))
                    chunk = inflater.unconsumed_tail
            except zlib.error:
                return True
        pos += 12 + length
    return inflated < expected


_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
"""(first row, first column, row step, column step) of the seven interlaced PNG passes."""


def _convert_opened(img: Image.Image, name: str, *, drop_alpha: bool,
                    keep_planes: bool) -> tuple[np.ndarray, list[str]]:
    """Load an opened image and convert it as load_image describes."""

    notes: list[str] = []
    try:
        n_frames = getattr(img, "n_frames", 1)
    except _DECODE_ERRORS:
        n_frames = 1
    if n_frames > 1:
        notes.append(f"image has {n_frames} frames; using the first")
    if _decodes_from_16_bit(img):
        notes.append("converted 16-bit to 8-bit (the decoder keeps the high byte)")

    try:
        img.load()
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: truncated or corrupt image ({one_line(exc)})") from None

    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF: keep the pixels as stored
        orientation = 1
        notes.append("ignored unreadable EXIF data")
    if orientation in range(2, 9):
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as exc:
            raise ImageError(f"{name}: cannot apply EXIF orientation ({one_line(exc)})") from None
        notes.append(f"applied EXIF orientation ({orientation})")

    if keep_planes:
        array, more = _to_planes(img, name, drop_alpha=drop_alpha)
    else:
        array, more = _to_rgb(img, name, drop_alpha=drop_alpha)
    return array, notes + more


def _decodes_from_16_bit(img: Image.Image) -> bool:
    """True when Pillow squeezes 16-bit colour samples into an 8-bit mode (e.g. 48-bit PNG)."""
    if img.mode not in ("RGB", "RGBA", "LA"):
        return False
    for tile in getattr(img, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
        if ";16" in rawmode:
            return True
    return False


def from_pil(
    img: Image.Image, *, drop_alpha: bool = False, keep_planes: bool = False, name: str = "<image>"
) -> tuple[np.ndarray, list[str]]:
    """Convert an already opened PIL image like :func:`load_image` does, EXIF orientation included."""
    return _convert_opened(img, name, drop_alpha=drop_alpha, keep_planes=keep_planes)


_GRAY_MODES = ("L", "LA", "La", "1", "I", *_SIXTEEN_BIT_MODES)


def _to_planes(img: Image.Image, name: str, *, drop_alpha: bool) -> tuple[np.ndarray, list[str]]:
    """The image's own planes: gray stays one channel and alpha stays (unless dropped)."""
    alpha = None
    if img.has_transparency_data and not drop_alpha:
        alpha = np.asarray(img.getchannel("A") if "A" in img.getbands() else img.convert("RGBA").getchannel("A"))
    rgb, notes = _to_rgb(img, name, drop_alpha=True)
    dropped = ("dropped alpha channel", "dropped transparency")
    notes = [n for n in notes if alpha is None or n not in dropped]
    if img.mode in _GRAY_MODES:
        rgb = rgb[..., :1]
        notes = [n.replace(" to RGB", " to 8-bit gray") for n in notes if n != "converted grayscale to RGB"]
    planes = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=2)
    return np.ascontiguousarray(planes), notes


def _to_rgb(img: Image.Image, name: str, *, drop_alpha: bool) -> tuple[np.ndarray, list[str]]:
    notes: list[str] = []
    mode = img.mode

    if img.has_transparency_data:
        if not drop_alpha:
            kind = "an alpha channel" if mode in _ALPHA_MODES else "transparency"
            raise ImageError(f"{name}: image has {kind} (mode {mode}), which this conversion to RGB would lose")
        notes.append("dropped alpha channel" if mode in _ALPHA_MODES else "dropped transparency")

    if mode == "RGB":
        rgb = np.asarray(img)
    elif mode in ("RGBA", "RGBa"):
        rgb = np.asarray(img.convert("RGBA"))[..., :3]  # RGBa -> RGBA un-premultiplies
    elif mode == "La":
        la = np.asarray(img).astype(np.uint32)
        lum, alpha = la[..., 0], la[..., 1]
        gray = np.where(alpha > 0, np.minimum((lum * 255 + alpha // 2) // np.maximum(alpha, 1), 255), 0)
        rgb = _gray_to_rgb(gray.astype(np.uint8))
        notes.append("converted grayscale to RGB")
    elif mode in ("L", "LA"):
        rgb = _gray_to_rgb(np.asarray(img)[..., 0] if mode == "LA" else np.asarray(img))
        notes.append("converted grayscale to RGB")
    elif mode == "1":
        rgb = np.asarray(img.convert("RGB"))
        notes.append("converted 1-bit to RGB")
    elif mode in ("P", "PA"):
        rgb = np.asarray(img.convert("RGBA"))[..., :3]
        notes.append("converted palette image to RGB")
    elif mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(
                f"{name}: unsupported 32-bit integer image (values {values.min()}..{values.max()} "
                "are outside 0..65535)"
            )
        # round(v / 257): 257 is odd, so v / 257 is never exactly n + 0.5
        gray = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
        rgb = _gray_to_rgb(gray)
        notes.append("converted 16-bit to 8-bit")
        notes.append("converted grayscale to RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        try:
            rgb = np.asarray(img.convert("RGB"))
        except ValueError as exc:
            raise ImageError(f"{name}: cannot convert {mode} to RGB ({one_line(exc)})") from None
        notes.append(f"converted {mode} to RGB")
    else:
        raise ImageError(f"{name}: unsupported pixel format (mode {mode})")

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if not rgb.flags.writeable:  # arrays viewing Pillow's buffer are read-only
        rgb = rgb.copy()
    return rgb, notes


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _metadata_options(fmt: str, metadata: dict[str, bytes]) -> dict:
    """Pillow's save options that write ``metadata`` in format ``fmt``."""
    if fmt not in ("PNG", "JPEG", "WEBP", "TIFF"):
        return {}
    options: dict = {}
    if "icc" in metadata:
        options["icc_profile"] = metadata["icc"]
    if fmt == "TIFF":  # EXIF tags and XMP (tag 700) go into the TIFF's own directory
        tags = Image.Exif()
        if "exif" in metadata:
            tags.load(metadata["exif"])
        if "xmp" in metadata:
            tags[700] = metadata["xmp"]
        return {**options, "tiffinfo": tags} if len(tags) else options
    if "exif" in metadata:
        options["exif"] = metadata["exif"]
    if "xmp" in metadata:
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", metadata["xmp"].decode("utf-8", "replace"))
            options["pnginfo"] = info
        else:
            options["xmp"] = metadata["xmp"]
    return options


# extension -> (Pillow format, save options).  Only formats that store 8-bit
# RGB faithfully; lossless where the format can be, otherwise quality 95.  PNG at
# zlib level 1: faster than Pillow's default level, and no larger on decoded photos
# (docs/BENCHMARKS.md).
_SAVE_FORMATS: dict[str, tuple[str, dict]] = {
    "png": ("PNG", {"compress_level": 1}),
    "bmp": ("BMP", {}),
    "tif": ("TIFF", {"compression": "tiff_deflate"}),
    "tiff": ("TIFF", {"compression": "tiff_deflate"}),
    "webp": ("WEBP", {"lossless": True, "exact": True}),
    "ppm": ("PPM", {}),
    "pnm": ("PPM", {}),
    "jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
    "jpeg": ("JPEG", {"quality": 95, "subsampling": 0}),
    "jpe": ("JPEG", {"quality": 95, "subsampling": 0}),
    "jfif": ("JPEG", {"quality": 95, "subsampling": 0}),
    "tga": ("TGA", {}),
    "qoi": ("QOI", {}),
    "jp2": ("JPEG2000", {}),
    "j2k": ("JPEG2000", {}),
    "avif": ("AVIF", {"quality": 95}),
}
SAVE_EXTENSIONS = tuple(sorted(_SAVE_FORMATS))
_PLANE_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_WITHOUT_ALPHA = {"BMP", "PPM", "JPEG"}
_WITHOUT_GRAY = {"QOI"}
"""Output extensions :func:`save_image` understands (without the dot)."""


def format_for(target: str | os.PathLike | None, format: str | None = None) -> str:
    """The output format (an extension key, e.g. ``"png"``) for a target path.

    ``format`` (an extension or Pillow format name, any case) wins over the
    path; a path without extension, or no path, means PNG.  Raises
    ImageError for formats we do not write.
    """
    if format is not None:
        key = format.lower().lstrip(".")
        aliases = {"jpeg2000": "jp2"}
        key = aliases.get(key, key)
        where = f"format {format!r}"
    elif target is not None:
        key = os.path.splitext(os.fspath(target))[1].lower().lstrip(".")
        if not key:
            return "png"
        where = os.fspath(target)
    else:
        return "png"
    if key not in _SAVE_FORMATS:
        supported = ", ".join("." + ext for ext in SAVE_EXTENSIONS)
        raise ImageError(f"{where}: unknown output image format '.{key}' (supported: {supported})")
    fmt = _SAVE_FORMATS[key][0]
    if fmt not in Image.SAVE:
        Image.init()  # Pillow registers most plugins lazily
    if fmt not in Image.SAVE:
        raise ImageError(f"{where}: this Pillow build cannot write {fmt}")
    return key


def save_image(
    array: np.ndarray, target: str | os.PathLike | BinaryIO, format: str | None = None,
    metadata: dict[str, bytes] | None = None,
) -> None:
    """Write an HxW or HxWxC ``uint8`` array (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) as an image.

    ``target`` is a path or a binary file object.  The format comes from
    ``format`` if given, else from the path's extension (png, bmp, tif/tiff,
    webp (lossless), ppm/pnm, jpg/jpeg (quality 95, 4:4:4), tga, qoi,
    jp2/j2k, avif (quality 95)); PNG when there is neither.  ``metadata``
    (see read_metadata) is written where the format holds it: ICC and EXIF in
    PNG, JPEG, WebP and TIFF, XMP in PNG, JPEG, WebP and TIFF.  Raises
    ImageError for an unknown format, alpha in a format without it, or when
    writing fails.
    """
    array = np.asarray(array)
    planes = array[..., None] if array.ndim == 2 else array
    if planes.ndim != 3 or planes.shape[2] not in _PLANE_MODES or array.dtype != np.uint8:
        raise ValueError(f"expected an HxW or HxWxC uint8 array with C = 1..4, got {array.dtype} {array.shape}")
    is_path = isinstance(target, (str, os.PathLike))
    name = os.fspath(target) if is_path else getattr(target, "name", "<output>")
    key = format_for(target if is_path else None, format)
    fmt, options = _SAVE_FORMATS[key]
    mode = _PLANE_MODES[planes.shape[2]]
    if mode in ("LA", "RGBA") and fmt in _WITHOUT_ALPHA:
        raise ImageError(f"{name}: .{key} cannot store the image's alpha channel (write .png, .webp or .tif)")
    img = Image.fromarray(np.ascontiguousarray(planes[..., 0] if mode == "L" else planes), mode)
    if fmt in _WITHOUT_GRAY:
        img = img.convert("RGBA" if mode == "LA" else "RGB" if mode == "L" else mode)
    try:
        img.save(target, format=fmt, **options, **_metadata_options(fmt, metadata or {}))
    except OSError as exc:
        raise ImageError(f"{name}: cannot write ({exc.strerror or one_line(exc)})") from None
