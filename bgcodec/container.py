"""The ``.bgv`` file format (see docs/FORMAT.md).

Layout, all integers little-endian::

    "BGV"  version(u8)  model_id(4)  lambda(f32)  height(varint)  width(varint)
    flags(u8)  len_1 .. len_D (varints)
    pin_count(varint)  pin_1 .. pin_P     -- pin: stream(varint) position(varint) index(u8)
    index_crc(u32)
    [version 3: part_count(varint)  part_1 .. part_K  -- part: kind(u8) length(varint) payload]
    stream_1 .. stream_D
    file_crc(u32)      -- CRC-32 of every byte before it

``flags``: bits 0-3 = D (number of latent streams, 1..15; 0 in a lossless file), bit 4 =
shallow synthesis, bits 5-7 reserved (0).  Varints are unsigned LEB128, canonical
(shortest form), at most 5 bytes. A stream is one coded part of a latent (docs/FORMAT.md §5.2).
A pin fixes the scale index of one position (0-based stream, flat position within its
part) to the encoder's; pins are sorted by (stream, position) without repeats.

Version 3 adds parts for what a coloured photo without transparency does not need: a
grayscale mark, a lossless alpha plane, the whole image stored losslessly (for images too
small to gain from the learned coder), metadata, and tiles (for images larger than a tile:
each tile a file of its own, so that memory is bounded by the tile). A file that needs
none of them is written as version 2, byte for byte as before.

Standard library only: ``bgcodec info`` reads files without numpy or torch.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from bgcodec.errors import FormatError
from bgcodec.lambdas import to_cli

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "MAX_DIM",
    "MAX_DEPTH",
    "SYNTHESIS_KINDS",
    "Header",
    "pack",
    "unpack",
    "header_size",
    "format_info",
    "tile_boxes",
]

MAGIC = b"BGV"
FORMAT_VERSION = 3
"""The newest version this bgcodec reads and writes."""
PLAIN_VERSION = 2
"""The version of files without parts; this bgcodec reads it too."""
OLD_VERSIONS = {1: "written by bgcodec 0.1, whose files decode only on the kind of CPU that wrote them; "
                   "decode it with bgcodec 0.1 and encode the image again"}
MAX_DIM = 1 << 20
"""Largest accepted height or width."""
MAX_DEPTH = 15
"""Largest number of latent streams (4 bits in the flags byte)."""
SYNTHESIS_KINDS = ("full", "shallow")

PART_GRAY = 1
"""The image is grayscale: its colour channels decode to one."""
PART_ALPHA = 2
"""A lossless alpha plane: H×W bytes."""
PART_PIXELS = 3
"""The whole image, lossless: H×W×C bytes (C = 1..4: gray, gray+alpha, RGB, RGBA); no streams."""
PART_ICC, PART_EXIF, PART_XMP = 4, 5, 6
"""The source's colour profile, EXIF block (orientation 1) and XMP packet, as they were."""
METADATA_PARTS = {PART_ICC: "icc", PART_EXIF: "exif", PART_XMP: "xmp"}
PART_TILES = 7
"""The image as tiles (:func:`tile_boxes`): the tile size, then each tile's file; no streams."""
KNOWN_PARTS = (PART_GRAY, PART_ALPHA, PART_PIXELS, *METADATA_PARTS, PART_TILES)
TILE_MULTIPLE = 64
"""Tile sides are multiples of this (the model's padding multiple), so inner tiles need no padding."""
MAX_METADATA_BYTES = 16 * 2**20
"""Largest inflated metadata part a reader accepts."""
_STORED, _DEFLATED = 0, 1

_FLAG_DEPTH_MASK = 0x0F
_FLAG_SHALLOW = 0x10
_FLAG_RESERVED = 0xE0
_VARINT_MAX_BYTES = 5
_CRC_SIZE = 4


@dataclass(frozen=True)
class Header:
    """Everything in a ``.bgv`` file except the latent streams."""

    model_id: bytes
    """Exactly 4 bytes identifying the model weights."""
    lmbda: float
    """Model-internal λ (QARV convention), stored as float32."""
    height: int
    width: int
    synthesis: str
    """``"full"`` or ``"shallow"``."""
    index_checksum: int
    """CRC-32 of the scale indices (:func:`bgcodec.entropy.indices_checksum`)."""
    pins: tuple[tuple[int, int, int], ...] = ()
    """(latent, flat position, scale index) of each pinned scale, sorted."""
    gray: bool = False
    """The image is grayscale (version 3)."""
    alpha: bytes | None = None
    """The alpha plane, H×W bytes in row order (version 3)."""
    pixels: bytes | None = None
    """The whole image, H×W×``channels`` bytes, when it is stored losslessly (version 3)."""
    channels: int = 3
    """The channels of ``pixels`` (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA)."""
    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    """Metadata of the source image (version 3)."""
    tile_size: int = 0
    tiles: tuple[bytes, ...] | None = None
    """The files of the tiles of :func:`tile_boxes` (height, width, ``tile_size``), in row
    order, when the image is tiled (version 3); each is a file without parts or with only
    a pixels part."""

    @property
    def version(self) -> int:
        parts = (self.alpha, self.pixels, self.icc, self.exif, self.xmp, self.tiles)
        return FORMAT_VERSION if self.gray or any(p is not None for p in parts) else PLAIN_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, (bytes, bytearray)) or len(self.model_id) != 4:
            raise ValueError(f"model_id must be exactly 4 bytes, got {self.model_id!r}")
        if not math.isfinite(self.lmbda) or self.lmbda <= 0:
            raise ValueError(f"lambda must be a positive finite number, got {self.lmbda}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_DIM:
                raise ValueError(f"{name} must be an integer in 1..{MAX_DIM}, got {v!r}")
        if self.synthesis not in SYNTHESIS_KINDS:
            raise ValueError(f"synthesis must be 'full' or 'shallow', got {self.synthesis!r}")
        c = self.index_checksum
        if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= 0xFFFFFFFF:
            raise ValueError(f"index_checksum must be a uint32, got {c!r}")
        for pin in self.pins:
            if len(pin) != 3 or not all(isinstance(v, int) and v >= 0 for v in pin) or pin[2] > 255:
                raise ValueError(f"a pin is (latent, position, index) of non-negative ints, got {pin!r}")
        if not _pins_in_order(self.pins):
            raise ValueError("pins must be sorted by (latent, position), each position once")
        pixels = self.height * self.width
        if self.alpha is not None and len(self.alpha) != pixels:
            raise ValueError(f"the alpha plane must have {pixels} bytes, got {len(self.alpha)}")
        if self.pixels is not None and (self.channels not in (1, 2, 3, 4) or len(self.pixels) != pixels * self.channels
                                        or self.alpha is not None or self.gray):
            raise ValueError("lossless pixels need 1..4 channels of H×W bytes, and carry gray and alpha themselves")
        if self.tiles is not None:
            if self.pixels is not None or self.tile_size % TILE_MULTIPLE or not self.tile_size:
                raise ValueError(f"tiles need a tile size that is a positive multiple of {TILE_MULTIPLE}, and no "
                                 "lossless pixels")
            if len(self.tiles) != len(tile_boxes(self.height, self.width, self.tile_size)):
                raise ValueError("the number of tiles does not match the image and tile size")


def tile_boxes(height: int, width: int, tile_size: int) -> list[tuple[int, int, int, int]]:
    """The tiles of an image as (top, left, height, width), in row order.

    Each side is cut into the fewest tiles of at most ``tile_size`` (a multiple of
    TILE_MULTIPLE), all but the last of equal length rounded up to that multiple: tiles of
    about equal size rather than full tiles and a thin strip:

    >>> tile_boxes(1100, 900, 1024)
    [(0, 0, 576, 900), (576, 0, 524, 900)]
    """
    def cuts(length: int) -> list[tuple[int, int]]:
        count = -(-length // tile_size)
        step = -(-length // (count * TILE_MULTIPLE)) * TILE_MULTIPLE
        return [(start, min(step, length - start)) for start in range(0, length, step)]

    return [(top, left, h, w) for top, h in cuts(height) for left, w in cuts(width)]


def _pins_in_order(pins: tuple[tuple[int, int, int], ...]) -> bool:
    """Sorted by (latent, position), with no position twice."""
    positions = [pin[:2] for pin in pins]
    return all(a < b for a, b in zip(positions, positions[1:]))


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varint must be non-negative, got {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            break
    if len(out) > _VARINT_MAX_BYTES:
        raise ValueError("value too large for the format")
    return bytes(out)


def _f32(x: float) -> bytes:
    try:
        return struct.pack("<f", x)
    except OverflowError as e:
        raise ValueError(f"lambda {x} does not fit in float32") from e


def _head(header: Header, lengths: list[int]) -> bytes:
    depth = len(lengths)
    streamless = header.pixels is not None or header.tiles is not None
    if streamless and depth:
        raise ValueError("a lossless or tiled file has no latent streams")
    if not streamless and not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"number of latent streams must be in 1..{MAX_DEPTH}, got {depth}")
    lam = _f32(header.lmbda)
    if struct.unpack("<f", lam)[0] <= 0:
        raise ValueError(f"lambda {header.lmbda} rounds to 0 in float32")
    flags = depth | (_FLAG_SHALLOW if header.synthesis == "shallow" else 0)
    parts = [
        MAGIC,
        bytes([header.version]),
        bytes(header.model_id),
        lam,
        _varint(header.height),
        _varint(header.width),
        bytes([flags]),
        *(_varint(n) for n in lengths),
        _varint(len(header.pins)),
        *(_varint(latent) + _varint(position) + bytes([index]) for latent, position, index in header.pins),
        struct.pack("<I", header.index_checksum),
    ]
    if header.version == FORMAT_VERSION:
        parts.append(_parts(header))
    return b"".join(parts)


def _parts(header: Header) -> bytes:
    """The parts of a version-3 file, in order of kind."""
    parts = []
    if header.gray:
        parts.append((PART_GRAY, b""))
    if header.alpha is not None:
        parts.append((PART_ALPHA, _plane(header.alpha)))
    if header.pixels is not None:
        parts.append((PART_PIXELS, bytes([header.channels]) + _plane(header.pixels)))
    for kind, field in METADATA_PARTS.items():
        if getattr(header, field) is not None:
            parts.append((kind, _plane(getattr(header, field))))
    if header.tiles is not None:
        parts.append((PART_TILES, _varint(header.tile_size) + b"".join(_varint(len(t)) + t for t in header.tiles)))
    return _varint(len(parts)) + b"".join(bytes([kind]) + _varint(len(payload)) + payload for kind, payload in parts)


def _plane(data: bytes) -> bytes:
    """A plane as stored: method byte, then the bytes as they are or deflated, whichever is shorter."""
    deflated = zlib.compress(data, 9)
    return bytes([_DEFLATED]) + deflated if len(deflated) < len(data) else bytes([_STORED]) + data


def header_size(header: Header, streams: list[bytes]) -> int:
    """Bytes before the payload (everything but the streams and the final CRC)."""
    return len(_head(header, [len(s) for s in streams]))


def pack(header: Header, streams: list[bytes]) -> bytes:
    """Serialise a header and its latent streams (1..15 of them) to ``.bgv`` bytes."""
    streams = [bytes(s) for s in streams]
    body = _head(header, [len(s) for s in streams]) + b"".join(streams)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, msg: str) -> FormatError:
        return FormatError(f"{self.name}: {msg}")

    def truncated(self, need: int) -> FormatError:
        return self.fail(f"truncated (expected at least {need} bytes, got {len(self.data)})")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.truncated(end + _CRC_SIZE)
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def varint(self, what: str) -> int:
        value = 0
        for i in range(_VARINT_MAX_BYTES):
            if self.pos >= len(self.data):
                raise self.truncated(self.pos + 1 + _CRC_SIZE)
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise self.fail(f"bad varint for {what} (non-canonical encoding)")
                return value
        raise self.fail(f"bad varint for {what} (varint too long)")


def unpack(data: bytes, name: str = "<input>") -> tuple[Header, list[bytes]]:
    """Parse and fully validate ``.bgv`` bytes; raise FormatError naming ``name``."""
    data = bytes(data)
    r = _Reader(data, name)
    if not data:
        raise r.fail("not a bgcodec file (empty)")
    if data[:3] != MAGIC[: len(data[:3])]:
        raise r.fail("not a bgcodec file (bad magic)")
    r.take(3)
    version = r.take(1)[0]
    if version in OLD_VERSIONS:
        raise r.fail(f"format version {version}, {OLD_VERSIONS[version]}")
    if version not in (PLAIN_VERSION, FORMAT_VERSION):
        raise r.fail(f"unsupported format version {version} (this bgcodec reads versions {PLAIN_VERSION} and "
                     f"{FORMAT_VERSION}; a newer bgcodec wrote it?)")
    model_id = r.take(4)
    (lmbda,) = struct.unpack("<f", r.take(4))
    height = r.varint("height")
    width = r.varint("width")
    flags = r.take(1)[0]
    depth = flags & _FLAG_DEPTH_MASK
    lengths = [r.varint(f"length of stream {i + 1}") for i in range(depth)]
    pins = tuple((r.varint("pin latent"), r.varint("pin position"), r.take(1)[0])
                 for _ in range(r.varint("pin count")))
    (index_crc,) = struct.unpack("<I", r.take(4))
    parts = _read_parts(r) if version == FORMAT_VERSION else []
    head_end = r.pos

    expected = head_end + sum(lengths) + _CRC_SIZE
    if len(data) < expected:
        raise r.fail(f"truncated (expected {expected} bytes, got {len(data)})")
    if len(data) > expected:
        # Distinguish appended bytes from a corrupted length field.
        body_ok = zlib.crc32(data[: expected - _CRC_SIZE]) & 0xFFFFFFFF == struct.unpack(
            "<I", data[expected - _CRC_SIZE : expected]
        )[0]
        if body_ok:
            raise r.fail(f"trailing data ({len(data) - expected} bytes after the end of the file)")
        raise r.fail(f"checksum mismatch (file is corrupt; size {len(data)} != {expected})")
    (stored_crc,) = struct.unpack("<I", data[-_CRC_SIZE:])
    if zlib.crc32(data[:-_CRC_SIZE]) & 0xFFFFFFFF != stored_crc:
        raise r.fail("checksum mismatch (file is corrupt)")

    # Semantic checks after the CRC: a damaged byte reads as corruption above,
    # these only fire for files written wrongly.
    if flags & _FLAG_RESERVED:
        raise r.fail(f"reserved flag bits set (flags = 0x{flags:02x})")
    found = _check_parts(r, parts) if version == FORMAT_VERSION else {}
    streamless = [kind for kind in (PART_PIXELS, PART_TILES) if kind in found]
    if depth == 0 and not streamless:
        raise r.fail("no latent streams (depth 0)")
    if depth and streamless:
        raise r.fail(f"a {'lossless' if PART_PIXELS in found else 'tiled'} file with latent streams")
    if len(streamless) > 1:
        raise r.fail("a file both lossless and tiled")
    if height == 0 or width == 0:
        raise r.fail(f"zero image size ({width}x{height})")
    if height > MAX_DIM or width > MAX_DIM:
        raise r.fail(f"image size {width}x{height} too large (max {MAX_DIM} per side)")
    if not math.isfinite(lmbda) or lmbda <= 0:
        raise r.fail(f"invalid lambda {lmbda}")
    if any(latent >= depth for latent, _, _ in pins):
        raise r.fail(f"a pinned scale names a latent past the last of {depth}")
    if not _pins_in_order(pins):
        raise r.fail("pinned scales out of order or repeated")

    streams = []
    pos = head_end
    for n in lengths:
        streams.append(data[pos : pos + n])
        pos += n
    planes = _planes(r, found, height * width)
    if PART_TILES in found:
        planes.update(_tiles(r, found[PART_TILES], height, width, model_id, lmbda))
    header = Header(
        model_id=model_id,
        lmbda=float(lmbda),
        height=height,
        width=width,
        synthesis="shallow" if flags & _FLAG_SHALLOW else "full",
        index_checksum=index_crc,
        pins=pins,
        **planes,
    )
    return header, streams


def _read_parts(r: _Reader) -> list[tuple[int, bytes]]:
    count = r.varint("part count")
    return [(r.take(1)[0], r.take(r.varint("part length"))) for _ in range(count)]


def _check_parts(r: _Reader, parts: list[tuple[int, bytes]]) -> dict[int, bytes]:
    """The parts by kind, once the file's CRC has matched: known kinds, in order, each once."""
    kinds = [kind for kind, _ in parts]
    unknown = [kind for kind in kinds if kind not in KNOWN_PARTS]
    if unknown:
        raise r.fail(f"unknown part kind {unknown[0]} (a newer bgcodec wrote it?)")
    if kinds != sorted(set(kinds)):
        raise r.fail("parts out of order or repeated")
    if not parts:
        raise r.fail("a version-3 file without parts")
    return dict(parts)


def _planes(r: _Reader, parts: dict[int, bytes], pixels: int) -> dict:
    """The Header fields of the parts, their planes inflated and checked against the image size."""
    fields: dict = {"gray": PART_GRAY in parts}
    if parts.get(PART_GRAY, b""):
        raise r.fail("the grayscale part has a payload")
    if PART_ALPHA in parts:
        fields["alpha"] = _unplane(r, parts[PART_ALPHA], pixels, "alpha plane")
    if PART_PIXELS in parts:
        payload = parts[PART_PIXELS]
        channels = payload[0] if payload else 0
        if channels not in (1, 2, 3, 4) or fields["gray"] or "alpha" in fields:
            raise r.fail("bad lossless pixels part")
        fields.update(pixels=_unplane(r, payload[1:], pixels * channels, "lossless pixels"), channels=channels)
    for kind, field in METADATA_PARTS.items():
        if kind in parts:
            fields[field] = _unplane(r, parts[kind], None, f"{field} part")
    return fields


def _tiles(r: _Reader, payload: bytes, height: int, width: int, model_id: bytes, lmbda: float) -> dict:
    """The Header fields of a tiles part, each tile's file checked as a whole file: its size
    the layout's, the image's model and λ, and no parts but lossless pixels."""
    tiles_reader = _Reader(payload, r.name)
    tile_size = tiles_reader.varint("tile size")
    if not tile_size or tile_size % TILE_MULTIPLE:
        raise r.fail(f"bad tile size {tile_size} (a positive multiple of {TILE_MULTIPLE})")
    tiles = []
    for number, (_, _, tile_height, tile_width) in enumerate(tile_boxes(height, width, tile_size), 1):
        try:
            data = tiles_reader.take(tiles_reader.varint("tile length"))
        except FormatError:
            raise r.fail(f"the tiles part ends before tile {number}") from None
        tile, _ = unpack(data, f"{r.name}: tile {number}")
        if (tile.height, tile.width) != (tile_height, tile_width) or tile.model_id != model_id or (
                tile.lmbda != lmbda):
            raise r.fail(f"tile {number} does not belong to this image (its size, model or lambda differs)")
        if tile.version != PLAIN_VERSION and (tile.pixels is None or tile.channels != 3 or tile.icc or tile.exif
                                              or tile.xmp or tile.tiles is not None):
            raise r.fail(f"tile {number} has parts of its own")
        tiles.append(data)
    if tiles_reader.pos != len(payload):
        raise r.fail("the tiles part has bytes after the last tile")
    return {"tile_size": tile_size, "tiles": tuple(tiles)}


def _unplane(r: _Reader, payload: bytes, size: int | None, what: str) -> bytes:
    """A stored plane of exactly ``size`` bytes, or of any size up to MAX_METADATA_BYTES when
    ``size`` is None (inflating at most one byte past the limit)."""
    limit = MAX_METADATA_BYTES if size is None else size
    method, data = (payload[0], payload[1:]) if payload else (None, b"")
    if method == _DEFLATED:
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(data, limit + 1)
        except zlib.error:
            raise r.fail(f"corrupt {what}") from None
    elif method != _STORED:
        raise r.fail(f"unknown storage method of the {what}")
    if size is not None and len(data) != size:
        raise r.fail(f"the {what} holds {len(data)} bytes, the image needs {size}")
    if len(data) > limit:
        raise r.fail(f"the {what} is larger than {limit} bytes")
    return data


def coding(header: Header) -> str:
    """How the file stores its image: "learned", "lossless" or "tiled"."""
    if header.tiles is not None:
        return "tiled"
    return "lossless" if header.pixels is not None else "learned"


def _channel_names(header: Header) -> str:
    if header.pixels is not None:
        return ("gray", "gray+alpha", "RGB", "RGBA")[header.channels - 1]
    return ("gray" if header.gray else "RGB") + ("+alpha" if header.alpha is not None else "")


def format_info(header: Header, streams: list[bytes], total_bytes: int) -> dict:
    """Plain dict describing a file, for ``bgcodec info``."""
    payload = sum(len(s) for s in streams)
    head = header_size(header, streams)
    pixels = header.height * header.width
    return {
        "format_version": header.version,
        "coding": coding(header),
        "channels": _channel_names(header),
        "model_id": bytes(header.model_id).hex(),
        "lambda_model": header.lmbda,
        "lambda_cli": to_cli(header.lmbda),
        "height": header.height,
        "width": header.width,
        "depth": len(streams),
        "synthesis": header.synthesis,
        "stream_bytes": [len(s) for s in streams],
        "index_checksum": f"{header.index_checksum:08x}",
        "pinned_scales": len(header.pins),
        "tiles": 0 if header.tiles is None else len(header.tiles),
        "tile_size": header.tile_size,
        "alpha_bytes": len(_plane(header.alpha)) if header.alpha is not None else 0,
        **{f"{field}_bytes": len(getattr(header, field) or b"") for field in METADATA_PARTS.values()},
        "header_bytes": head,
        "overhead_bytes": total_bytes - payload,
        "total_bytes": total_bytes,
        "bpp": 8 * total_bytes / pixels,
    }
