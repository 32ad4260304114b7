"""Rate targets (bgcodec.targets, encode --target-*): searched with the real encoder."""

import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bgcodec.cli import cli
from bgcodec.codec import Codec
from bgcodec.targets import TOLERANCE, Target, _psnr, encode_to_target


@pytest.fixture(scope="module")
def codec():
    return Codec.load(None, device="cpu")


@pytest.fixture(scope="module")
def photo():
    from pathlib import Path

    with Image.open(Path(__file__).resolve().parents[1] / "docs" / "sample.png") as im:
        return np.asarray(im.convert("RGB"))[:128, :192].copy()


@pytest.mark.slow
@pytest.mark.parametrize("size", [1500, 3000])
def test_a_size_target_is_never_exceeded_and_nearly_reached(codec, photo, size):
    hit = encode_to_target(codec, photo, Target("size", size))
    assert hit.met and len(hit.data) <= size
    assert len(hit.data) >= size * (1 - TOLERANCE) or math.isclose(hit.lmbda, codec.lambda_range[1])
    assert codec.decode(hit.data).shape == photo.shape


@pytest.mark.slow
def test_a_bpp_target_counts_the_whole_file(codec, photo):
    hit = encode_to_target(codec, photo, Target("bpp", 0.8))
    assert hit.met and 8 * len(hit.data) / (128 * 192) <= 0.8


@pytest.mark.slow
def test_a_psnr_target_is_reached_and_not_overshot(codec, photo):
    hit = encode_to_target(codec, photo, Target("psnr", 30.0))
    assert hit.met and 30.0 <= _psnr(photo, codec.decode(hit.data)) < 30.5


def test_targets_out_of_reach_say_so_and_give_the_closest_file(codec, photo):
    tiny = encode_to_target(codec, photo, Target("size", 10))
    assert not tiny.met and math.isclose(tiny.lmbda, codec.lambda_range[0])
    perfect = encode_to_target(codec, photo, Target("psnr", 90.0))
    assert not perfect.met and math.isclose(perfect.lmbda, codec.lambda_range[1])


@pytest.mark.slow
def test_encode_target_size_on_the_command_line(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "p.png")
    result = CliRunner().invoke(cli, ["encode", str(tmp_path / "p.png"), "--target-size", "2000", "-o",
                                      str(tmp_path / "p.bgv")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.bgv").stat().st_size <= 2000 and "lambda" in result.stderr
    result = CliRunner().invoke(cli, ["encode", str(tmp_path / "p.png"), "-q", "50", "--target-psnr", "30"])
    assert result.exit_code == 2 and "mutually exclusive" in result.stderr
