"""Tests for bgcodec.container (the .bgv file format)."""

import math
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from bgcodec import lambdas
from bgcodec.container import (
    FORMAT_VERSION,
    PLAIN_VERSION,
    MAX_DIM,
    TILE_MULTIPLE,
    Header,
    format_info,
    header_size,
    pack,
    tile_boxes,
    unpack,
)
from bgcodec.errors import FormatError

NAME = "img.bgv"


def _header(**kw):
    base = dict(
        model_id=b"QB\x00\xff",
        lmbda=512.0,
        height=512,
        width=768,
        synthesis="full",
        index_checksum=0xDEADBEEF,
    )
    base.update(kw)
    return Header(**base)


def _streams(lengths, seed=0):
    rnd = random.Random(seed)
    return [bytes(rnd.randrange(256) for _ in range(n)) for n in lengths]


def _recrc(body: bytes) -> bytes:
    """Replace the final CRC so that only the semantic checks can fail."""
    body = body[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def _fails(data, match=None):
    with pytest.raises(FormatError) as ei:
        unpack(data, NAME)
    msg = str(ei.value)
    assert msg.startswith(NAME + ": "), msg
    assert "\n" not in msg
    if match is not None:
        assert match in msg, msg
    return msg


# --- round trips --------------------------------------------------------------


@pytest.mark.parametrize("synthesis", ["full", "shallow"])
@pytest.mark.parametrize("depth", [1, 2, 9, 15])
def test_roundtrip(synthesis, depth):
    streams = _streams([(7 * i * i) % 300 for i in range(depth)], seed=depth)
    h = _header(synthesis=synthesis)
    data = pack(h, streams)
    h2, s2 = unpack(data, NAME)
    assert h2 == h
    assert s2 == streams
    assert len(data) == header_size(h, streams) + sum(map(len, streams)) + 4


@pytest.mark.parametrize("hw", [(1, 1), (1, 127), (128, 1), (512, 768), (65535, 70000), (MAX_DIM, MAX_DIM)])
def test_roundtrip_sizes(hw):
    h = _header(height=hw[0], width=hw[1])
    data = pack(h, _streams([4, 8]))
    h2, _ = unpack(data)
    assert (h2.height, h2.width) == hw


@pytest.mark.parametrize("lam", [0.1, 1.0 / 3.0, 16.0, 2048.0, 1e-30, 3.4e38, 7.62939453125e-06])
def test_lambda_float32_exact(lam):
    f32 = struct.unpack("<f", struct.pack("<f", lam))[0]
    h = _header(lmbda=lam)
    data = pack(h, [b"abcd"])
    assert data[8:12] == struct.pack("<f", lam)
    h2, _ = unpack(data)
    assert isinstance(h2.lmbda, float)
    assert h2.lmbda == f32
    # Re-packing the decoded header gives identical bytes.
    assert pack(h2, [b"abcd"]) == data


def test_empty_streams_allowed():
    h = _header()
    data = pack(h, [b"", b"", b"x" * 4])
    assert unpack(data)[1] == [b"", b"", b"xxxx"]


def test_layout_prefix():
    h = _header(height=200, width=300, lmbda=1024.0, synthesis="shallow")
    data = pack(h, [b"\x01\x02\x03\x04", b""])
    assert data[:3] == b"BGV"
    assert data[3] == PLAIN_VERSION  # no parts: written as version 2
    assert data[4:8] == h.model_id
    assert data[8:12] == struct.pack("<f", 1024.0)
    assert data[12:14] == bytes([0xC8, 0x01])  # 200
    assert data[14:16] == bytes([0xAC, 0x02])  # 300
    assert data[16] == 0x10 | 2  # shallow, depth 2
    assert data[17:19] == bytes([4, 0])
    assert data[19] == 0  # no pinned scales
    assert data[20:24] == struct.pack("<I", h.index_checksum)
    assert data[24:28] == b"\x01\x02\x03\x04"
    assert data[28:] == struct.pack("<I", zlib.crc32(data[:28]))


def test_pinned_scales_layout_and_roundtrip():
    h = _header(pins=((0, 5, 63), (0, 300, 7), (2, 0, 1)))
    data = pack(h, [b"", b"", b"abcd"])
    assert data[17:20] == bytes([0, 0, 4])
    assert data[20:30] == bytes([3, 0, 5, 63, 0, 0xAC, 0x02, 7, 2, 0]) and data[30] == 1
    assert unpack(data)[0] == h


@pytest.mark.parametrize("pins", [((1, 0, 3), (0, 0, 3)), ((0, 4, 3), (0, 4, 5)), ((0, 1, 256),), ((0, -1, 2),)])
def test_pins_must_be_sorted_unique_and_in_range(pins):
    with pytest.raises(ValueError, match="pin"):
        _header(pins=pins)


def test_pin_past_the_last_latent_is_refused():
    good = pack(_header(pins=((1, 2, 3),)), [b"", b""])
    bad = bytearray(good[:-4])
    bad[20] = 2  # latent 3 of 2
    bad = bytes(bad) + struct.pack("<I", zlib.crc32(bytes(bad)))
    _fails(bad, "pinned scale names a latent past the last")


def test_overhead_kodak_9_streams():
    # Plausible per-latent sizes for a 768x512 image at ~2 bpp (98 KB).
    lengths = [24, 60, 150, 400, 1200, 3500, 9000, 30000, 54000]
    streams = [bytes(n) for n in lengths]
    data = pack(_header(height=512, width=768), streams)
    overhead = len(data) - sum(lengths)
    assert overhead <= 48
    # With every stream under 16 KiB (2-byte lengths) the overhead is 43 bytes.
    data = pack(_header(), [bytes(16383)] * 9)
    assert len(data) - 9 * 16383 == 44


# --- invalid headers on the pack side -------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(model_id=b"abc"),
        dict(model_id=b"abcde"),
        dict(model_id="abcd"),
        dict(lmbda=0.0),
        dict(lmbda=-1.0),
        dict(lmbda=math.nan),
        dict(lmbda=math.inf),
        dict(height=0),
        dict(width=0),
        dict(width=MAX_DIM + 1),
        dict(height=1.5),
        dict(synthesis="half"),
        dict(index_checksum=-1),
        dict(index_checksum=2**32),
    ],
)
def test_header_validation(kw):
    with pytest.raises(ValueError):
        _header(**kw)


def test_pack_rejects_bad_depth_and_lambda():
    with pytest.raises(ValueError):
        pack(_header(), [])
    with pytest.raises(ValueError):
        pack(_header(), [b""] * 16)
    with pytest.raises(ValueError):
        pack(_header(lmbda=1e39), [b""])  # float32 overflow
    with pytest.raises(ValueError):
        pack(_header(lmbda=1e-50), [b""])  # rounds to 0 in float32


# --- corruption -------------------------------------------------------------------------


def _small():
    return pack(_header(height=200, width=300), _streams([12, 0, 5, 33]))


def test_bad_magic():
    data = _small()
    _fails(b"PNG" + data[3:], "not a bgcodec file (bad magic)")
    _fails(b"\x89PNG\r\n\x1a\n" + bytes(40), "bad magic")
    _fails(b"", "not a bgcodec file")
    _fails(b"x", "bad magic")


def test_unsupported_version():
    data = bytearray(_small())
    data[3] = 7
    _fails(bytes(data), "unsupported format version 7 (this bgcodec reads versions 2 and 3")
    data[3] = 0
    _fails(bytes(data), "unsupported format version 0")


def test_version_1_says_what_to_do():
    data = bytearray(_small())
    data[3] = 1
    _fails(bytes(data), "format version 1, written by bgcodec 0.1, whose files decode only on the kind of CPU")


def test_truncated_everywhere():
    data = _small()
    for n in range(len(data)):
        _fails(data[:n])
    msg = _fails(data[:-1], "truncated")
    assert f"expected {len(data)} bytes, got {len(data) - 1}" in msg
    _fails(data[:10], "truncated")


def test_trailing_data():
    data = _small()
    _fails(data + b"\x00", "trailing data")
    _fails(data + data, "trailing data")


def test_checksum_mismatch():
    data = bytearray(_small())
    data[-6] ^= 0x40  # inside the last stream
    _fails(bytes(data), "checksum mismatch (file is corrupt)")
    data = bytearray(_small())
    data[-1] ^= 0x01  # the CRC itself
    _fails(bytes(data), "checksum mismatch")


def test_every_single_byte_flip_detected():
    data = _small()
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            d = bytearray(data)
            d[pos] ^= mask
            _fails(bytes(d))


def test_every_byte_value_at_every_position_detected():
    data = pack(_header(height=3, width=5), [b"abcd", b"ef"])
    for pos in range(len(data)):
        for v in range(256):
            if v == data[pos]:
                continue
            d = bytearray(data)
            d[pos] = v
            with pytest.raises(FormatError):
                unpack(bytes(d), NAME)


# Semantic errors in files with a valid CRC (only a buggy writer produces these).


def _with_flags(flags):
    data = bytearray(pack(_header(), [b"abcd"]))
    assert data[16] == 1
    data[16] = flags
    return bytes(data)


def test_reserved_bits_set():
    for bit in (0x20, 0x40, 0x80):
        _fails(_recrc(_with_flags(0x01 | bit)), "reserved")
        _fails(_with_flags(0x01 | bit))  # without fixing the CRC: still rejected


def test_depth_zero():
    # depth 0 -> no length fields; rebuild the file by hand.
    data = pack(_header(), [b""])
    body = data[:16] + b"\x00" + data[18:-4]  # drop the one length byte (0)
    _fails(body + struct.pack("<I", zlib.crc32(body)), "depth 0")


def _with_dims(h_bytes, w_bytes):
    data = pack(_header(height=1, width=1), [b"abcd"])
    body = data[:12] + h_bytes + w_bytes + data[14:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_zero_and_huge_dimensions():
    _fails(_with_dims(b"\x00", b"\x01"), "zero image size")
    _fails(_with_dims(b"\x05", b"\x00"), "zero image size")
    too_big = bytes([0x81, 0x80, 0x40])  # 2**20 + 1
    _fails(_with_dims(too_big, b"\x01"), "too large")
    _fails(_with_dims(b"\x01", too_big), "too large")


def test_bad_varints():
    _fails(_with_dims(b"\x80\x00", b"\x01"), "bad varint")  # non-canonical
    _fails(_with_dims(b"\xff\xff\xff\xff\xff\x01", b"\x01"), "varint too long")
    data = pack(_header(), [b"abcd"])
    _fails(data[:12] + b"\x80\x80", "truncated")  # varint runs off the end


def test_bad_lambda():
    for lam in (0.0, -1.0, math.inf, math.nan):
        data = pack(_header(), [b"abcd"])
        body = data[:8] + struct.pack("<f", lam) + data[12:]
        _fails(_recrc(body), "invalid lambda")


def test_name_default():
    with pytest.raises(FormatError, match=r"^<input>: "):
        unpack(b"nope")


# --- format_info ---------------------------------------------------------------------------


def test_format_info():
    streams = _streams([100, 0, 2000])
    h = _header(lmbda=1024.0, height=512, width=768, synthesis="shallow")
    data = pack(h, streams)
    h2, s2 = unpack(data)
    info = format_info(h2, s2, len(data))
    assert info["format_version"] == 2
    assert info["pinned_scales"] == 0
    assert info["model_id"] == "514200ff"
    assert info["lambda_model"] == 1024.0
    assert math.isclose(info["lambda_cli"], lambdas.to_cli(1024.0))
    assert (info["height"], info["width"], info["depth"]) == (512, 768, 3)
    assert info["synthesis"] == "shallow"
    assert info["stream_bytes"] == [100, 0, 2000]
    assert info["total_bytes"] == len(data)
    assert info["header_bytes"] == header_size(h2, s2)
    assert info["overhead_bytes"] == len(data) - 2100 == info["header_bytes"] + 4
    assert math.isclose(info["bpp"], 8 * len(data) / (512 * 768))


def test_no_numpy_or_torch_import():
    code = (
        "import sys, bgcodec.container; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_format_md_example_matches_pack():
    """The annotated hex example in docs/FORMAT.md is what pack() writes."""
    import pathlib
    import re

    import numpy as np

    from bgcodec.entropy import encode_symbols, indices_checksum

    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_text()
    block = re.search(r"## 7\. Annotated example.*?```\n(.*?)```", doc, re.S).group(1)
    expected = bytes.fromhex(block)
    i1 = np.array([[10, 20], [30, 40]], np.int32)
    i2 = np.array([5, 63], np.int32)
    streams = [
        encode_symbols(np.array([[0, 1], [-3, 300]]), i1),
        encode_symbols(np.array([0, -2]), i2),
    ]
    h = Header(b"QB01", 1024.0, 200, 300, "full", indices_checksum([i1, i2]), pins=((0, 3, 40),))
    assert pack(h, streams) == expected


# -- version 3: parts -------------------------------------------------------------------------


def _v3(**kw):
    return _header(height=4, width=5, **kw)


@pytest.mark.parametrize("fields", [dict(gray=True), dict(alpha=bytes(range(20))), dict(gray=True, alpha=bytes(20)),
                                    dict(pixels=bytes(range(60)), channels=3, index_checksum=0)])
def test_parts_round_trip_and_make_version_3(fields):
    header = _v3(**fields)
    streams = [] if "pixels" in fields else _streams([7, 3])
    data = pack(header, streams)
    assert data[3] == FORMAT_VERSION
    assert unpack(data, NAME) == (header, streams)


def test_a_plane_is_stored_deflated_only_when_that_is_shorter():
    rnd = random.Random(1)
    flat, noisy = bytes(20), bytes(rnd.randrange(256) for _ in range(20))
    assert len(pack(_v3(alpha=flat), [b"x"])) < len(pack(_v3(alpha=noisy), [b"x"]))
    assert unpack(pack(_v3(alpha=noisy), [b"x"]))[0].alpha == noisy


def _with_parts(parts: bytes, depth: int = 1) -> bytes:
    """A version-3 file with these raw part bytes (count included) and a valid CRC."""
    plain = pack(_v3(), [b"x"] * depth)
    head = plain[:-4 - depth]  # up to and including the index CRC
    return _recrc(bytes([head[0], head[1], head[2], FORMAT_VERSION]) + head[4:] + parts + b"x" * depth + b"0000")


@pytest.mark.parametrize("parts,match", [
    (b"\x01\x09\x00", "unknown part kind 9"),
    (b"\x02\x01\x00\x01\x00", "out of order or repeated"),
    (b"\x00", "without parts"),
    (b"\x01\x02\x03\x00\x01\x02", "holds 2 bytes, the image needs 20"),
    (b"\x01\x02\x05\x01junk", "corrupt alpha plane"),
    (b"\x01\x02\x02\x07\x00", "unknown storage method"),
    (b"\x01\x01\x01\x00", "grayscale part has a payload"),
    (b"\x01\x03\x03\x03\x00\x00", "lossless file with latent streams"),
])
def test_bad_parts_are_refused(parts, match):
    _fails(_with_parts(parts), match)


def test_a_deflated_plane_larger_than_the_image_is_refused_without_inflating_it_all():
    bomb = zlib.compress(bytes(10**7))
    data = _with_parts(b"\x01\x02" + bytes(_varint_bytes(len(bomb) + 1)) + b"\x01" + bomb)
    _fails(data, "the image needs 20")


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


# -- version 3: tiles -------------------------------------------------------------------------


@pytest.mark.parametrize("height,width,tile", [(1, 1, 64), (64, 65, 64), (1100, 900, 1024), (2049, 4097, 1024),
                                              (300, 200, 128), (5000, 64, 1024)])
def test_tiles_cover_the_image_once_in_row_order_none_larger_than_the_tile(height, width, tile):
    boxes = tile_boxes(height, width, tile)
    covered = np.zeros((height, width), np.int32)
    for top, left, h, w in boxes:
        assert 1 <= h <= tile and 1 <= w <= tile
        covered[top:top + h, left:left + w] += 1
    assert (covered == 1).all()
    assert boxes == sorted(boxes)
    inner = [(top, left) for top, left, _, _ in boxes]
    assert all(top % TILE_MULTIPLE == 0 and left % TILE_MULTIPLE == 0 for top, left in inner)
    assert len({top for top, _ in inner}) == -(-height // tile) and len({left for _, left in inner}) == -(-width // tile)


def _tile_file(height, width, **kw):
    fields = dict(model_id=b"QB\x00\xff", lmbda=512.0, height=height, width=width, synthesis="full",
                  index_checksum=7)
    fields.update(kw)
    return pack(Header(**fields), [] if "pixels" in kw else _streams([5, 2], seed=height * width))


def _tiled(height=70, width=40, tile_size=64, tiles=None, **kw):
    if tiles is None:
        tiles = tuple(_tile_file(h, w) for _, _, h, w in tile_boxes(height, width, tile_size))
    return _header(height=height, width=width, index_checksum=0, tile_size=tile_size, tiles=tiles, **kw)


def test_a_tiled_file_round_trips_with_its_parts_and_tiles():
    lossless_tile = _tile_file(6, 40, pixels=bytes(6 * 40 * 3), index_checksum=0)
    header = _tiled(tiles=(_tile_file(64, 40), lossless_tile), alpha=bytes(70 * 40), exif=b"Exif")
    data = pack(header, [])
    assert data[3] == FORMAT_VERSION
    assert unpack(data, NAME) == (header, [])
    info = format_info(header, [], len(data))
    assert (info["coding"], info["tiles"], info["tile_size"]) == ("tiled", 2, 64)


def _tiles_part(tile_size: int, tiles) -> bytes:
    payload = _varint_bytes(tile_size) + b"".join(_varint_bytes(len(t)) + t for t in tiles)
    return b"\x01\x07" + _varint_bytes(len(payload)) + payload


def _raw_tiled(tile_size=64, tiles=None) -> bytes:
    """A 70×40 version-3 file of this raw tiles part (no streams, no pins) and a valid CRC."""
    tiles = [_tile_file(64, 40), _tile_file(6, 40)] if tiles is None else tiles
    head = b"BGV" + bytes([FORMAT_VERSION]) + b"QB\x00\xff" + struct.pack("<f", 512.0) + bytes([70, 40, 0, 0])
    body = head + struct.pack("<I", 0) + _tiles_part(tile_size, tiles)
    return body + struct.pack("<I", zlib.crc32(body))


def test_the_raw_tiled_file_is_what_pack_writes():
    assert _raw_tiled() == pack(_tiled(), [])


@pytest.mark.parametrize("tile_size,tiles,match", [
    (0, None, "bad tile size 0"),
    (96, None, "bad tile size 96"),
    (64, [_tile_file(64, 40)], "ends before tile 2"),
    (64, [_tile_file(64, 40), _tile_file(6, 40), b"x"], "bytes after the last tile"),
    (64, [_tile_file(64, 40), _tile_file(6, 41)], "tile 2 does not belong"),
    (64, [_tile_file(64, 40), _tile_file(6, 40, lmbda=256.0)], "tile 2 does not belong"),
    (64, [_tile_file(64, 40), _tile_file(6, 40, alpha=bytes(240))], "tile 2 has parts of its own"),
    (64, [_tile_file(64, 40), _tile_file(6, 40)[:-1]], "tile 2: truncated"),
    (128, [_tile_file(70, 40)], None),
])
def test_bad_tiles_are_refused(tile_size, tiles, match):
    data = _raw_tiled(tile_size, tiles)
    if match is None:
        assert unpack(data, NAME)[0].tiles == tuple(tiles)
    else:
        _fails(data, match)
