"""bgcodec eval: Bjøntegaard deltas, metrics, codecs and the command end to end (CPU, fast)."""

import csv
import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bgcodec.eval import bdrate
from bgcodec.eval import codecs as classic_codecs
from bgcodec.cli import cli
from bgcodec.eval.metrics import MS_SSIM_MIN_SIZE, MS_SSIM_WEIGHTS, MSSSIM, ms_ssim, ms_ssim_db, psnr

RATES = np.array([0.12, 0.25, 0.5, 0.9, 1.6, 2.4])
PSNRS = np.array([27.0, 29.6, 32.1, 34.4, 36.9, 38.8])


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB test image (low-pass noise plus gradients), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3))
    big = np.asarray(Image.fromarray(small.astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    big += 30 * np.sin(xx / 7.0)[..., None] + 20 * np.cos(yy / 11.0)[..., None]
    return np.clip(big, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Bjøntegaard


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_of_a_uniformly_cheaper_curve_is_exact(method):
    assert bdrate.bd_rate(RATES, PSNRS, RATES * 0.8, PSNRS, method=method) == pytest.approx(-20.0, abs=1e-9)
    assert bdrate.bd_rate(RATES, PSNRS, RATES * 1.25, PSNRS, method=method) == pytest.approx(25.0, abs=1e-9)
    assert bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS, method=method) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_psnr_of_a_shifted_curve_is_the_shift(method):
    assert bdrate.bd_psnr(RATES, PSNRS, RATES, PSNRS + 0.5, method=method) == pytest.approx(0.5, abs=1e-9)
    assert bdrate.bd_quality(RATES, PSNRS, RATES, PSNRS - 1.25, method=method) == pytest.approx(-1.25, abs=1e-9)


def test_bd_is_independent_of_point_order_and_only_uses_the_overlap():
    order = np.array([3, 0, 5, 1, 4, 2])
    assert bdrate.bd_rate(RATES[order], PSNRS[order], RATES * 0.8, PSNRS) == pytest.approx(-20.0, abs=1e-9)
    # a test curve that covers only the middle of the anchor's quality range
    assert bdrate.bd_rate(RATES, PSNRS, RATES[2:4] * 0.5, PSNRS[2:4]) < -40


def test_bd_reports_curves_that_do_not_overlap_or_have_too_few_points():
    with pytest.raises(bdrate.BDError, match="do not overlap"):
        bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS - 20)
    with pytest.raises(bdrate.BDError, match="do not overlap"):
        bdrate.bd_psnr(RATES, PSNRS, RATES * 100, PSNRS)
    with pytest.raises(bdrate.BDError, match="at least 4"):
        bdrate.bd_rate(RATES, PSNRS, RATES[:3], PSNRS[:3], method="cubic")
    with pytest.raises(bdrate.BDError, match="1 distinct"):  # a random-init model: every λ gives the same point
        bdrate.bd_psnr(RATES, PSNRS, [1.2, 1.2, 1.2], [14.6, 14.6, 14.6])
    with pytest.raises(ValueError, match="unknown method"):
        bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS, method="linear")


def test_pchip_reproduces_straight_lines_and_keeps_monotone_data_monotone():
    x = np.array([0.0, 1.0, 3.0, 4.5, 7.0])
    assert bdrate.pchip_integral(x, 2 * x + 1, 0.5, 6.0) == pytest.approx((6.0**2 + 6.0) - (0.5**2 + 0.5))
    y = np.array([0.0, 0.1, 3.0, 3.05, 9.0])
    slopes = bdrate.pchip_slopes(x, y)
    assert np.all(slopes >= 0)


def test_pchip_matches_scipy_when_available():
    interpolate = pytest.importorskip("scipy.interpolate", reason="scipy not installed (optional cross-check)")
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 8):
        for _ in range(20):
            x = np.cumsum(rng.uniform(0.2, 2.0, n))
            y = rng.normal(size=n) if n % 2 else np.cumsum(rng.uniform(0, 1, n))
            lo, hi = np.sort(rng.uniform(x[0], x[-1], 2))
            expected = interpolate.PchipInterpolator(x, y).integrate(lo, hi)
            assert bdrate.pchip_integral(x, y, lo, hi) == pytest.approx(expected, abs=1e-10)


# --------------------------------------------------------------------------
# metrics


def test_psnr_identical_images_is_inf_and_a_constant_offset_is_known():
    image = texture(40, 56)
    assert psnr(image, image) == math.inf
    lifted = np.clip(image, 10, 240)
    shifted = lifted + np.uint8(5)  # every sample off by exactly 5: MSE = 25
    assert psnr(lifted, shifted) == pytest.approx(10 * math.log10(255**2 / 25))
    one = lifted.copy()
    one[0, 0, 0] += 10  # a single sample off by 10 of H·W·3
    assert psnr(lifted, one) == pytest.approx(10 * math.log10(255**2 / (100 / lifted.size)))
    with pytest.raises(ValueError):
        psnr(image, image[:-1])


def test_ms_ssim_of_identical_images_is_one_and_db_is_inf():
    image = texture(200, 240)
    assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim_db(1.0) == math.inf
    assert ms_ssim_db(0.99) == pytest.approx(20.0)


def test_ms_ssim_of_flat_images_is_the_luminance_term_alone():
    # Flat images have no contrast or structure: every cs term is 1 and only the coarsest
    # scale's luminance term l = (2ab + C1) / (a² + b² + C1) remains, to the power 0.1333.
    a, b = 100.0, 130.0
    c1 = (0.01 * 255) ** 2
    expected = ((2 * a * b + c1) / (a * a + b * b + c1)) ** MS_SSIM_WEIGHTS[-1]
    x = np.full((170, 180, 3), a, np.uint8)
    y = np.full((170, 180, 3), b, np.uint8)
    assert ms_ssim(x, y) == pytest.approx(expected, rel=1e-12)
    assert ms_ssim(y, x) == pytest.approx(expected, rel=1e-12)


def test_ms_ssim_falls_with_noise():
    image = texture(192, 208)
    rng = np.random.default_rng(0)
    scores = []
    for sigma in (2, 8, 25):
        noisy = np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
        scores.append(ms_ssim(image, noisy))
    assert 1 > scores[0] > scores[1] > scores[2] > 0


def test_ms_ssim_mirror_pads_images_below_161_px():
    assert MS_SSIM_MIN_SIZE == 161
    assert not MSSSIM(texture(161, 161)).padded
    for shape in ((64, 80), (160, 400), (1, 1), (3, 500)):
        image = texture(max(shape[0], 8), max(shape[1], 8))[: shape[0], : shape[1]]
        metric = MSSSIM(image)
        assert metric.padded
        assert metric(image) == pytest.approx(1.0, abs=1e-12)
    small = texture(64, 80)
    noisy = np.clip(small + np.random.default_rng(3).normal(0, 10, small.shape), 0, 255).astype(np.uint8)
    value = ms_ssim(small, noisy)
    assert 0 < value < 1
    # padding is by reflection: the same result as padding by hand and measuring the big image
    padded = lambda a: np.pad(a, ((48, 49), (40, 41), (0, 0)), mode="symmetric")  # noqa: E731
    assert value == pytest.approx(ms_ssim(padded(small), padded(noisy)), rel=1e-12)


# --------------------------------------------------------------------------
# codecs


@pytest.mark.parametrize("name", classic_codecs.CLASSIC_CODECS)
def test_each_classic_codec_round_trips_or_says_why_not(name):
    codec = classic_codecs.CODEC_CLASSES[name]()
    try:
        codec.prepare()
    except classic_codecs.CodecUnavailable as exc:
        pytest.skip(f"{name} unavailable here: {exc}")
    image = texture(32, 40)
    low, high = codec.values[1], codec.values[-2]
    if not codec.larger_is_better:
        low, high = high, low
    data_low, data_high = codec.encode(image, low), codec.encode(image, high)
    decoded_low, decoded_high = codec.decode(data_low), codec.decode(data_high)
    assert decoded_low.shape == decoded_high.shape == image.shape and decoded_high.dtype == np.uint8
    assert len(data_high) > len(data_low)
    assert psnr(image, decoded_high) > psnr(image, decoded_low)


def test_missing_imagecodecs_makes_jxl_and_jpeg2000_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import imagecodecs -> ImportError
    for name in ("jxl", "jpeg2000"):
        with pytest.raises(classic_codecs.CodecUnavailable, match="imagecodecs"):
            classic_codecs.CODEC_CLASSES[name]().prepare()


# --------------------------------------------------------------------------
# end to end


@pytest.fixture
def tiny_dataset(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(texture(64, 80, seed=i)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def run_eval(*args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)], catch_exceptions=False)


@pytest.mark.slow
def test_eval_end_to_end(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    result = run_eval(tiny_dataset, "--weights", "random:tiny", "--lambdas", "0.01,0.1", "--codecs", "jpeg,webp",
                      "--out", out, "--anchors", tmp_path)  # no anchors there: a note
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "summary.md", "bgcodec.csv", "jpeg.csv", "webp.csv"} <= names

    results = json.loads((out / "results.json").read_text())
    assert [i["name"] for i in results["dataset"]["images"]] == ["img0.png", "img1.png"]
    assert results["weights"]["random_init"] and results["settings"]["lambdas"] == [0.01, 0.1]
    rows = results["rows"]
    per_codec = {"bgcodec": 2, "jpeg": len(classic_codecs.JpegCodec.values), "webp": len(classic_codecs.WebpCodec.values)}
    assert len(rows) == 2 * sum(per_codec.values()) and not results["errors"]
    for row in rows:
        assert row["bpp"] == pytest.approx(8 * row["bytes"] / (64 * 80))
        assert 0 < row["bpp"] < 48 and 5 < row["psnr"] < 99 and 0 < row["ms_ssim"] <= 1
        assert row["encode_s"] >= 0 and row["decode_s"] >= 0

    # the bgcodec points are the bytes `bgcodec encode` writes and `bgcodec decode` reads
    from bgcodec.codec import Codec
    from bgcodec.imageio import load_image

    codec = Codec.load("random:tiny", device="cpu")
    image, _ = load_image(str(tiny_dataset / "img1.png"))
    data = codec.encode(image, 0.1)
    row = next(r for r in rows if r["codec"] == "bgcodec" and r["image"] == "img1.png" and r["value"] == 0.1)
    assert row["bytes"] == len(data)
    assert row["psnr"] == pytest.approx(psnr(image, codec.decode(data)))

    jpeg = {m["value"]: m for m in results["means"]["jpeg"]}
    assert jpeg[90]["bpp"] > jpeg[5]["bpp"] and jpeg[90]["psnr"] > jpeg[5]["psnr"] + 5
    assert jpeg[90]["ms_ssim"] > jpeg[5]["ms_ssim"]
    assert set(results["bd"]["table"]) == {"jpeg", "webp"}
    assert any("mirror-padded" in n for n in results["notes"])

    with open(out / "jpeg.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * per_codec["jpeg"] and float(table[0]["bpp"]) > 0

    summary = (out / "summary.md").read_text()
    assert "random-init weights, not trained" in summary
    assert "| JPEG 4:2:0 | q=90 |" in summary and "Bjøntegaard" in summary

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib not installed: the RD plots are skipped (pip install 'bgcodec[eval]')")
    for plot in ("rd_psnr.png", "rd_msssim.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(out / plot).size[0] > 400


def test_eval_keeps_existing_outputs_and_checks_its_options(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    # matplotlib "missing": no plots, a note, and the rest still works
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    result = run_eval(tiny_dataset, "--weights", "random:tiny", "--lambdas", "0.05", "--codecs", "none",
                      "--out", out, "--limit", "1")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"results.json", "summary.md", "bgcodec.csv"}
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 1 and results["bd"]["table"] == {}
    assert any("matplotlib is not installed" in n for n in results["notes"])

    again = run_eval(tiny_dataset, "--weights", "random:tiny", "--lambdas", "0.05", "--codecs", "none", "--out", out)
    assert again.exit_code == 2 and "--force" in again.output

    assert run_eval(tiny_dataset, "--codecs", "jpeg,gif").exit_code == 2
    assert run_eval(tiny_dataset, "--lambdas", "0.01,abc").exit_code == 2
    outside = run_eval(tiny_dataset, "--weights", "random:tiny", "--lambdas", "5", "--codecs", "none",
                       "--out", tmp_path / "other")
    assert outside.exit_code == 1 and "outside the range" in outside.output
