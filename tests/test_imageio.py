"""bgcodec.imageio: reading any Pillow image as 8-bit RGB, and writing images."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bgcodec.errors import BgcodecError, ImageError
from bgcodec.imageio import DEFAULT_MAX_PIXELS, SAVE_EXTENSIONS, from_pil, load_image, save_image


def encoded(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def random_rgb(height=6, width=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def check_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)
    assert array.flags.c_contiguous and array.flags.writeable


# -- plain RGB and conversions ----------------------------------------------


def test_rgb_png_is_unchanged_and_has_no_notes(tmp_path):
    rgb = random_rgb()
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    for source in (path, str(path), path.read_bytes()):
        array, notes = load_image(source)
        assert notes == []
        np.testing.assert_array_equal(array, rgb)


def test_grayscale_is_replicated_to_rgb():
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    array, notes = load_image(encoded(Image.fromarray(gray)))
    check_rgb(array, 5, 6)
    for c in range(3):
        np.testing.assert_array_equal(array[..., c], gray)
    assert notes == ["converted grayscale to RGB"]


def test_palette_image_uses_palette_colours():
    img = Image.new("P", (4, 3))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putpixel((1, 2), 1)
    img.putpixel((3, 0), 2)
    array, notes = load_image(encoded(img))
    check_rgb(array, 3, 4)
    assert array[2, 1].tolist() == [255, 0, 0]
    assert array[0, 3].tolist() == [0, 255, 0]
    assert array[0, 0].tolist() == [0, 0, 0]
    assert notes == ["converted palette image to RGB"]


def test_palette_with_transparency_is_refused_or_dropped():
    img = Image.new("P", (4, 3))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 1)
    data = encoded(img, transparency=0)
    with pytest.raises(ImageError, match=r"^p\.png: .*transparency"):
        load_image(data, name="p.png")
    array, notes = load_image(data, drop_alpha=True)
    check_rgb(array, 3, 4)
    assert array[0, 0].tolist() == [200, 100, 50]
    assert array[1, 1].tolist() == [10, 20, 30]
    assert "dropped transparency" in notes


def test_rgba_is_refused_unless_drop_alpha_which_keeps_the_colours():
    rgba = np.concatenate([random_rgb(), np.full((6, 5, 1), 7, np.uint8)], axis=2)
    data = encoded(Image.fromarray(rgba))
    with pytest.raises(ImageError) as info:
        load_image(data, name="x.png")
    message = str(info.value)
    assert message.startswith("x.png: ") and "alpha" in message and "\n" not in message
    array, notes = load_image(data, drop_alpha=True)
    np.testing.assert_array_equal(array, rgba[..., :3])
    assert notes == ["dropped alpha channel"]


def test_la_is_refused_or_dropped_to_gray_rgb():
    la = np.stack([np.full((3, 4), 90, np.uint8), np.full((3, 4), 0, np.uint8)], axis=2)
    data = encoded(Image.fromarray(la))
    assert Image.open(io.BytesIO(data)).mode == "LA"
    with pytest.raises(ImageError, match="alpha"):
        load_image(data)
    array, notes = load_image(data, drop_alpha=True)
    assert (array == 90).all()
    assert notes == ["dropped alpha channel", "converted grayscale to RGB"]


def test_premultiplied_modes_are_unpremultiplied_when_dropping_alpha():
    la = Image.new("La", (2, 2), (50, 128))  # premultiplied: luminance 50 at alpha 128 ~ 100
    with pytest.raises(ImageError, match="alpha"):
        from_pil(la)
    array, notes = from_pil(la, drop_alpha=True)
    assert abs(int(array[0, 0, 0]) - 100) <= 1
    assert "dropped alpha channel" in notes
    rgba = Image.new("RGBa", (2, 2), (50, 25, 0, 128))
    array, _ = from_pil(rgba, drop_alpha=True)
    assert np.abs(array[0, 0].astype(int) - [100, 50, 0]).max() <= 1


def test_rgb_with_colour_key_transparency_counts_as_transparency():
    data = encoded(Image.new("RGB", (3, 3), (1, 2, 3)), transparency=(1, 2, 3))
    with pytest.raises(ImageError, match="transparency"):
        load_image(data)
    array, notes = load_image(data, drop_alpha=True)
    assert array[0, 0].tolist() == [1, 2, 3]


V16 = [0, 1, 128, 129, 256, 257, 385, 386, 32767, 32768, 65278, 65279, 65534, 65535]


@pytest.mark.parametrize("byteorder", ["big-endian PNG", "little-endian TIFF"])
def test_16_bit_gray_is_scaled_by_rounding_v_over_257(byteorder):
    values = np.array([V16], dtype=np.uint16)
    img = Image.fromarray(values)
    data = encoded(img, "PNG") if "PNG" in byteorder else encoded(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    array, notes = load_image(data)
    expected = [round(v / 257) for v in V16]
    assert array[0, :, 0].tolist() == expected
    assert (array[..., 0] == array[..., 2]).all()
    assert notes == ["converted 16-bit to 8-bit", "converted grayscale to RGB"]


def test_16_bit_crafted_png_is_not_clipped():
    rows = b"\x00" + np.array([[65535, 1000, 30000]], dtype=">u2").tobytes()
    array, _ = load_image(crafted_png(3, 1, 16, 0, rows))
    assert array[0, :, 1].tolist() == [255, 4, 117]


def test_32_bit_integer_image_in_16_bit_range_is_scaled_and_out_of_range_refused():
    values = np.array([[0, 300, 65535]], dtype=np.int32)
    data = encoded(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    array, notes = load_image(data)
    assert array[0, :, 0].tolist() == [0, 1, 255]
    assert "converted 16-bit to 8-bit" in notes
    with pytest.raises(ImageError, match="outside 0..65535"):
        load_image(encoded(Image.fromarray(np.array([[-1, 70000]], dtype=np.int32)), "TIFF"))


def test_16_bit_rgb_png_gets_a_note():
    rows = b"\x00" + np.array([[65535, 0, 1000]], dtype=">u2").tobytes()
    array, notes = load_image(crafted_png(1, 1, 16, 2, rows))
    check_rgb(array, 1, 1)
    assert array[0, 0, 0] == 255 and array[0, 0, 1] == 0
    assert any(note.startswith("converted 16-bit to 8-bit") for note in notes)


def test_cmyk_is_converted():
    img = Image.new("CMYK", (4, 2), (0, 255, 255, 0))  # pure red
    array, notes = load_image(encoded(img, "TIFF"))
    check_rgb(array, 2, 4)
    assert array[0, 0].tolist() == [255, 0, 0]
    assert notes == ["converted CMYK to RGB"]


def test_one_bit_is_converted_to_black_and_white():
    img = Image.new("1", (5, 2), 0)
    img.putpixel((4, 1), 1)
    array, notes = load_image(encoded(img))
    check_rgb(array, 2, 5)
    assert array[1, 4].tolist() == [255, 255, 255]
    assert array[0, 0].tolist() == [0, 0, 0]
    assert notes == ["converted 1-bit to RGB"]


def test_float_images_are_refused():
    with pytest.raises(ImageError, match=r"^f\.tif: unsupported pixel format \(mode F\)$"):
        load_image(encoded(Image.new("F", (2, 2)), "TIFF"), name="f.tif")


# -- EXIF orientation, frames ----------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt):
    rgb = np.zeros((2, 4, 3), np.uint8)  # 4 wide, 2 high
    rgb[0, 0] = 255  # white top-left pixel (stored)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    array, notes = load_image(encoded(img, fmt, exif=exif))
    check_rgb(array, 4, 2)
    assert "applied EXIF orientation (6)" in notes
    if fmt == "PNG":  # lossless: stored top-left ends up top-right
        assert array[0, 1].tolist() == [255, 255, 255]
        assert array.sum() == 3 * 255


def test_orientation_1_gives_no_note():
    img = Image.new("RGB", (4, 2))
    exif = img.getexif()
    exif[0x0112] = 1
    array, notes = load_image(encoded(img, "PNG", exif=exif))
    check_rgb(array, 2, 4)
    assert notes == []


def test_multi_frame_uses_first_frame_with_note():
    frames = [Image.new("RGB", (3, 2), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    array, notes = load_image(buffer.getvalue())
    assert array[0, 0].tolist() == [255, 0, 0]
    assert "image has 2 frames; using the first" in notes


# -- limits and broken inputs ----------------------------------------------


def test_default_limit_is_far_above_8k():
    assert DEFAULT_MAX_PIXELS == 256 * 2**20 > 8192 * 8192


def test_huge_header_is_refused_before_decoding():
    # 300000 x 300000 RGB would need 270 GB; the pixel data is not even there.
    data = crafted_png(300_000, 300_000, 8, 2, b"")
    with pytest.raises(ImageError) as info:
        load_image(data, name="bomb.png")
    message = str(info.value)
    assert message.startswith("bomb.png: image too large (300000x300000")
    assert f"{DEFAULT_MAX_PIXELS:,}" in message


def test_header_size_above_pillows_bomb_limit_but_below_ours_is_not_refused_at_open():
    # 15000 x 15000 = 225 Mpx: Pillow alone would refuse (> 2 x 89 Mpx); ours allows it,
    # so the failure is the missing pixel data, not a decompression-bomb error.
    with pytest.raises(ImageError, match="truncated"):
        load_image(crafted_png(15_000, 15_000, 1, 0, b""))


def test_png_data_that_ends_before_the_last_row_is_refused():
    rows = b"".join(b"\x00" + bytes(3 * 40) for _ in range(5))  # 5 of 30 rows, a complete zlib stream
    with pytest.raises(ImageError, match="ends before its last row"):
        load_image(crafted_png(40, 30, 8, 2, rows))
    complete = b"".join(b"\x00" + bytes(3 * 40) for _ in range(30))
    assert load_image(crafted_png(40, 30, 8, 2, complete))[0].shape == (30, 40, 3)


def test_an_image_larger_than_the_memory_is_refused_from_its_header(monkeypatch):
    from bgcodec import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 2**20)
    image = encoded(Image.new("RGB", (300, 200)))
    assert load_image(image)[0].shape == (200, 300, 3)  # no memory check unless asked
    with pytest.raises(BgcodecError, match="needs about .* GiB of memory"):
        load_image(image, memory_per_pixel=resources.ENCODE_BYTES_PER_PIXEL)


def test_max_pixels_argument(tmp_path):
    data = encoded(Image.new("RGB", (4, 3)))
    with pytest.raises(ImageError, match=r"4x3 = 12 pixels; the limit is 10 pixels"):
        load_image(data, max_pixels=10)
    array, _ = load_image(data, max_pixels=12)
    check_rgb(array, 3, 4)


def test_not_an_image():
    with pytest.raises(ImageError) as info:
        load_image(b"hello, world\n", name="foo.txt")
    assert str(info.value) == "foo.txt: not an image (cannot identify image file)"


def test_empty_input():
    with pytest.raises(ImageError, match=r"^empty\.png: not an image"):
        load_image(b"", name="empty.png")


def test_truncated_png():
    data = encoded(Image.fromarray(random_rgb(40, 40)))
    with pytest.raises(ImageError) as info:
        load_image(data[: len(data) // 2], name="cut.png")
    message = str(info.value)
    assert message.startswith("cut.png: truncated")
    assert "\n" not in message


def test_unreadable_paths(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.png: cannot read \(No such file or directory\)"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path)


def test_default_names():
    with pytest.raises(ImageError, match=r"^<input>: "):
        load_image(b"nope")
    with pytest.raises(ImageError, match=r"^<stdin>: "):
        load_image(b"nope", name="<stdin>")


# -- saving ------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "tiff", "webp", "ppm", "pnm", "tga", "qoi"])
def test_lossless_formats_round_trip(tmp_path, ext):
    rgb = random_rgb(7, 9)
    path = tmp_path / f"out.{ext}"
    save_image(rgb, path)
    array, notes = load_image(path)
    np.testing.assert_array_equal(array, rgb)


@pytest.mark.parametrize("ext, fmt", [("jpg", "JPEG"), ("JPEG", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_format_follows_the_extension(tmp_path, ext, fmt):
    path = tmp_path / f"out.{ext}"
    save_image(random_rgb(), str(path))
    with Image.open(path) as img:
        assert img.format == fmt


def test_jpeg_is_high_quality(tmp_path):
    rgb = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    save_image(rgb, tmp_path / "x.jpg")
    array, _ = load_image(tmp_path / "x.jpg")
    assert np.abs(array.astype(int) - rgb).max() <= 3


def test_png_is_the_default(tmp_path):
    buffer = io.BytesIO()
    save_image(random_rgb(), buffer)
    assert buffer.getvalue().startswith(b"\x89PNG")
    save_image(random_rgb(), tmp_path / "noext")
    assert (tmp_path / "noext").read_bytes().startswith(b"\x89PNG")
    buffer = io.BytesIO()
    save_image(random_rgb(), buffer, format="bmp")
    assert buffer.getvalue().startswith(b"BM")


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(ImageError, match=r"out\.xyz: unknown output image format '\.xyz'"):
        save_image(random_rgb(), tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()
    with pytest.raises(ImageError, match="unknown output image format"):
        save_image(random_rgb(), io.BytesIO(), format="gif")


def test_save_rejects_wrong_arrays():
    with pytest.raises(ValueError):
        save_image(np.zeros((4, 4, 5), np.uint8), io.BytesIO())
    with pytest.raises(ValueError):
        save_image(np.zeros((4, 4, 3), np.float32), io.BytesIO())


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
@pytest.mark.parametrize("ext", ["png", "tif", "webp", "tga", "qoi"])
def test_gray_and_alpha_planes_survive_the_lossless_formats(tmp_path, mode, ext):
    rng = np.random.default_rng(7)
    planes = rng.integers(0, 256, (5, 6, len(mode)), dtype=np.uint8)
    save_image(planes, tmp_path / f"x.{ext}")
    loaded, _ = load_image(tmp_path / f"x.{ext}", keep_planes=True)
    if ext in ("webp", "qoi") and mode != "RGBA":  # these store gray as colour
        loaded = loaded[..., [0, -1]] if mode == "LA" else loaded[..., :1]
    assert np.array_equal(loaded, planes)


def test_alpha_in_a_format_without_it_is_a_one_line_error(tmp_path):
    with pytest.raises(ImageError, match=r"x\.jpg: \.jpg cannot store the image's alpha channel"):
        save_image(np.zeros((4, 4, 4), np.uint8), tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


def test_keep_planes_returns_gray_and_alpha_as_they_are():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    array, notes = load_image(encoded(Image.fromarray(gray)), keep_planes=True)
    assert array.shape == (3, 4, 1) and np.array_equal(array[..., 0], gray) and notes == []
    rgba = np.random.default_rng(2).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    array, notes = load_image(encoded(Image.fromarray(rgba, "RGBA")), keep_planes=True)
    assert np.array_equal(array, rgba) and notes == []
    array, notes = load_image(encoded(Image.fromarray(rgba, "RGBA")), keep_planes=True, drop_alpha=True)
    assert np.array_equal(array, rgba[..., :3]) and notes == ["dropped alpha channel"]


def test_save_extensions_listed():
    assert {"png", "jpg", "webp", "tiff", "bmp", "ppm"} <= set(SAVE_EXTENSIONS)
