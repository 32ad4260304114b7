"""bgcodec.pillow, through Pillow's public API only."""

import numpy as np
import pytest
from PIL import Image

import bgcodec.pillow  # noqa: F401  (registers the format)
from bgcodec.errors import FormatError

SAMPLE = "docs/sample.png"


@pytest.fixture(scope="module")
def photo():
    from pathlib import Path

    with Image.open(Path(__file__).resolve().parents[1] / SAMPLE) as im:
        return im.convert("RGB").crop((0, 0, 128, 96))


def test_the_format_is_registered():
    assert Image.registered_extensions()[".bgv"] == "BGV"


def test_save_and_open_round_trip_lazily(photo, tmp_path):
    path = tmp_path / "x.bgv"
    photo.save(path, quality=60)
    with Image.open(path) as im:
        assert (im.format, im.mode, im.size) == ("BGV", "RGB", (128, 96))
        assert im.info["lambda"] > 0
        pixels = np.asarray(im)
    assert pixels.shape == (96, 128, 3)
    assert 10 * np.log10(255**2 / np.mean((pixels.astype(float) - np.asarray(photo)) ** 2)) > 25


def test_save_options_reach_the_encoder(photo, tmp_path):
    photo.save(tmp_path / "low.bgv", lmbda=0.001)
    photo.save(tmp_path / "high.bgv", lmbda=0.1)
    photo.save(tmp_path / "shallow.bgv", lmbda=0.01, synthesis="shallow")
    assert (tmp_path / "low.bgv").stat().st_size < (tmp_path / "high.bgv").stat().st_size
    with Image.open(tmp_path / "shallow.bgv") as im:
        im.load()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
def test_gray_and_alpha_modes_survive(photo, tmp_path, mode):
    image = photo.convert(mode)
    image.save(tmp_path / "x.bgv", lmbda=0.01)
    with Image.open(tmp_path / "x.bgv") as im:
        assert im.mode == mode
        if "A" in mode:
            assert np.array_equal(np.asarray(im)[..., -1], np.asarray(image)[..., -1])


def test_a_corrupt_file_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.bgv").write_bytes(b"BGV\x02" + bytes(20))
    with pytest.raises(FormatError, match=r"bad\.bgv: ") as info:
        Image.open(tmp_path / "bad.bgv")
    assert "\n" not in str(info.value)
