"""Colour profiles, EXIF and XMP survive encode and decode (unless --strip)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms

from bgcodec import container
from bgcodec.cli import cli
from bgcodec.imageio import read_metadata

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """A JPEG with an sRGB profile from littleCMS, camera EXIF (orientation 6) and XMP."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif.update({0x010F: "Canon", 0x0110: "EOS 5D Mark II", 0x0112: 6, 0x0132: "2026:12:02 10:00:00"})
    rng = np.random.default_rng(0)
    pixels = (np.add.outer(np.arange(64), np.arange(96))[..., None] + rng.integers(0, 20, (64, 96, 3))).astype(np.uint8)
    path = tmp_path_factory.mktemp("meta") / "camera.jpg"
    Image.fromarray(pixels).save(path, quality=95, icc_profile=icc, exif=exif.tobytes(), xmp=XMP)
    return path, icc


def test_read_metadata_keeps_everything_and_resets_the_orientation(tagged):
    path, icc = tagged
    found = read_metadata(path.read_bytes())
    assert found["icc"] == icc and found["xmp"] == XMP
    exif = Image.Exif()
    exif.load(found["exif"])
    assert exif[0x010F] == "Canon" and exif[0x0112] == 1


def test_metadata_parts_round_trip_in_the_container():
    header = container.Header(model_id=b"abcd", lmbda=100.0, height=2, width=3, synthesis="full", index_checksum=0,
                              icc=b"profile" * 50, exif=b"Exif\0\0tags", xmp=XMP)
    data = container.pack(header, [b"stream"])
    assert data[3] == container.FORMAT_VERSION and container.unpack(data) == (header, [b"stream"])
    info = container.format_info(header, [b"stream"], len(data))
    assert (info["icc_bytes"], info["exif_bytes"], info["xmp_bytes"]) == (350, 10, len(XMP))


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "tif"])
def test_the_cli_writes_the_metadata_back(tagged, tmp_path, ext):
    path, icc = tagged
    runner = CliRunner()
    assert runner.invoke(cli, ["encode", str(path), "-l", "0.01", "-o", str(tmp_path / "x.bgv")]).exit_code == 0
    assert runner.invoke(cli, ["decode", str(tmp_path / "x.bgv"), "-o", str(tmp_path / f"x.{ext}")]).exit_code == 0
    with Image.open(tmp_path / f"x.{ext}") as im:
        exif = im.getexif()
        assert im.size == (64, 96)  # the pixels were turned upright
        assert im.info["icc_profile"] == icc and exif[0x0110] == "EOS 5D Mark II" and exif.get(0x0112) == 1
        assert im.info["xmp"] == XMP


def test_strip_leaves_it_out_and_info_shows_what_a_file_carries(tagged, tmp_path):
    path, icc = tagged
    runner = CliRunner()
    runner.invoke(cli, ["encode", str(path), "-l", "0.01", "-o", str(tmp_path / "kept.bgv")])
    runner.invoke(cli, ["encode", str(path), "-l", "0.01", "--strip", "-o", str(tmp_path / "stripped.bgv")])
    kept = json.loads(runner.invoke(cli, ["info", "--json", str(tmp_path / "kept.bgv")]).stdout)
    stripped = json.loads(runner.invoke(cli, ["info", "--json", str(tmp_path / "stripped.bgv")]).stdout)
    assert kept["icc_bytes"] == len(icc) and kept["exif_bytes"] > 0 and kept["xmp_bytes"] == len(XMP)
    assert stripped["icc_bytes"] == stripped["exif_bytes"] == stripped["xmp_bytes"] == 0
    assert stripped["total_bytes"] < kept["total_bytes"]


def test_the_python_api_and_pillow_carry_it_too(tagged, tmp_path):
    import bgcodec.pillow  # noqa: F401

    path, icc = tagged
    image = bgcodec.decompress(bgcodec.compress(path, 0.01))
    assert image.info["icc_profile"] == icc and image.info["xmp"] == XMP
    assert bgcodec.decompress(bgcodec.compress(path, 0.01, strip=True)).info.get("icc_profile") is None
    with Image.open(path) as im:
        im.save(tmp_path / "p.bgv", lmbda=0.01)
    with Image.open(tmp_path / "p.bgv") as im:
        assert im.info["icc_profile"] == icc
