"""Tests for bgcodec.codec (image ↔ .bgv) and bgcodec.weights (loading and saving)."""

import dataclasses
import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bgcodec import container, entropy, weights
from bgcodec.codec import Codec, image_to_tensor
from bgcodec.errors import BgcodecError, FormatError, WeightsError
from bgcodec.weights import LoadedModel
from helpers import encode_latents, perturb

LMBDA = 0.01  # CLI convention
SIZES = [(1, 1), (1, 65), (63, 64), (70, 130)]


def perturbed_codec(spec: str = "random:tiny", posterior_gain: float = 5.0) -> Codec:
    """A codec whose network is far from the identity (random init has layer scales 1e-6)."""
    loaded = weights.load_model(spec)
    model = perturb(loaded.model, posterior_gain)
    identity = weights.model_identity(model.state_dict())
    assert identity != loaded.identity
    return Codec(LoadedModel(model, identity, loaded.lambda_range, dict(loaded.metadata)), torch.device("cpu"))


@pytest.fixture(scope="module")
def codec():
    return Codec.load("random:tiny", "cpu")


@pytest.fixture(scope="module")
def lively():
    return perturbed_codec()


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        fx, fy, ph = rng.uniform(0.01, 0.08, 2).tolist() + [rng.uniform(0, 6)]
        chans.append(0.5 + 0.3 * np.sin(fx * x + ph) * np.cos(fy * y) + 0.15 * (x / max(w, 1) - y / max(h, 1)))
    return (np.clip(np.stack(chans, -1), 0, 1) * 255).round().astype(np.uint8)


IMAGES = [(kind, h, w) for kind in ("random", "smooth") for h, w in SIZES]


def make_image(kind, h, w, seed=0):
    return (random_image if kind == "random" else smooth_image)(h, w, seed)


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind,h,w", IMAGES)
@pytest.mark.parametrize("which", ["codec", "lively"])
def test_round_trip_matches_encoder_reconstruction(request, which, kind, h, w):
    c = request.getfixturevalue(which)
    image = make_image(kind, h, w)
    data, recon = c.encode(image, LMBDA, lossless_fallback=False, return_reconstruction=True)
    assert isinstance(data, bytes)
    assert recon.shape == (h, w, 3) and recon.dtype == np.uint8
    assert data == c.encode(image, LMBDA, lossless_fallback=False)  # the encoder is deterministic
    decoded = c.decode(data)
    assert decoded.shape == (h, w, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, recon)
    header, streams = container.unpack(data)
    assert (header.height, header.width) == (h, w)
    assert header.model_id == c.identity
    assert len(streams) == 9


@pytest.mark.parametrize("kind,h,w", [("random", 70, 130), ("smooth", 63, 64), ("random", 1, 65)])
def test_decoded_symbols_equal_encoded(lively, kind, h, w):
    image = make_image(kind, h, w, seed=4)
    data = lively.encode(image, LMBDA, lossless_fallback=False)
    header, streams = container.unpack(data)
    model = lively.model
    lmbda_model = lively.check_lambda(LMBDA)
    assert header.lmbda == lmbda_model
    lm = torch.tensor([lmbda_model], dtype=torch.float64)
    symbols, log_scales, _ = encode_latents(model, model.analyse(image_to_tensor(image), lm), lm)
    indices = [entropy.scale_indices(s) for s in log_scales]
    assert header.index_checksum == entropy.indices_checksum(indices)
    nonzero = 0
    for i, (stream, sym, idx) in enumerate(zip(streams, symbols, indices)):
        decoded = entropy.decode_symbols(stream, idx)
        assert np.array_equal(decoded, sym), f"latent {i + 1}"
        nonzero += np.count_nonzero(sym)
    assert nonzero > 0  # the test is not vacuous


def test_large_residuals_use_escape_coding():
    wild = perturbed_codec(posterior_gain=30.0)
    image = random_image(64, 64, seed=9)
    data, recon = wild.encode(image, LMBDA, return_reconstruction=True)
    model = wild.model
    lm = torch.tensor([wild.check_lambda(LMBDA)], dtype=torch.float64)
    symbols, _, _ = encode_latents(model, model.analyse(image_to_tensor(image), lm), lm)
    assert max(np.abs(s).max() for s in symbols) >= entropy.SUPPORT_RADIUS
    assert np.array_equal(wild.decode(data), recon)


@pytest.mark.parametrize("depth", [1, 5])
def test_partial_depth(lively, depth):
    image = smooth_image(70, 130, seed=2)
    full = lively.encode(image, LMBDA)
    data, recon = lively.encode(image, LMBDA, depth=depth, return_reconstruction=True)
    _, streams = container.unpack(data)
    assert len(streams) == depth
    assert len(data) < len(full)
    decoded = lively.decode(data)
    assert decoded.shape == image.shape
    assert np.array_equal(decoded, recon)


@pytest.mark.parametrize("depth", [0, 10, -1])
def test_bad_depth(codec, depth):
    with pytest.raises(BgcodecError, match="depth"):
        codec.encode(random_image(8, 8), LMBDA, depth=depth)


def test_bad_image(codec):
    with pytest.raises(BgcodecError):
        codec.encode(np.zeros((8, 8, 5), np.uint8), LMBDA)
    with pytest.raises(BgcodecError):
        codec.encode(np.zeros((8, 8, 3), np.float32), LMBDA)


@pytest.fixture(scope="module")
def shipped():
    return Codec.load(None, device="cpu")


@pytest.mark.parametrize("shape", [(8, 8, 3), (1, 512, 3), (768, 1, 3), (9, 7)])
def test_a_tiny_image_is_stored_losslessly_when_that_is_smaller(shipped, shape):
    image = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    data = shipped.encode(image, 0.01)
    learned = shipped.encode(image, 0.01, lossless_fallback=False)
    header, streams = container.unpack(data)
    assert header.pixels is not None and streams == [] and len(data) < len(learned)
    assert len(data) <= image.size + 32  # never much larger than the pixels it holds
    decoded = shipped.decode(data)
    assert np.array_equal(decoded.reshape(image.shape), image)


def test_a_photo_keeps_the_learned_coder(shipped):
    data = shipped.encode(smooth_image(96, 128, seed=1), 0.01)
    assert container.unpack(data)[0].pixels is None


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_gray_and_alpha_come_back_as_they_went_in(lively, channels):
    rng = np.random.default_rng(channels)
    colour = smooth_image(70, 90, seed=channels)
    planes = {1: colour[..., :1], 2: np.dstack([colour[..., :1], rng.integers(0, 256, (70, 90), np.uint8)]),
              4: np.dstack([colour, rng.integers(0, 256, (70, 90), np.uint8)])}[channels]
    data, recon = lively.encode(planes, LMBDA, lossless_fallback=False, return_reconstruction=True)
    header, _ = container.unpack(data)
    assert header.version == container.FORMAT_VERSION and header.gray == (channels < 3)
    decoded = lively.decode(data)
    assert decoded.shape == planes.shape and np.array_equal(decoded, recon)
    if channels in (2, 4):
        assert np.array_equal(decoded[..., -1], planes[..., -1])  # alpha is lossless
    assert lively.decode(lively.encode(colour, LMBDA, lossless_fallback=False)).shape == (70, 90, 3)


# -- tiles ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiled_image_and_file(lively):
    image = np.dstack([smooth_image(150, 100, seed=5), np.full((150, 100), 200, np.uint8)])
    reports = []
    data, recon = lively.encode(image, LMBDA, tile_size=64, return_reconstruction=True,
                                progress=lambda *report: reports.append(report))
    return image, data, recon, reports


def test_a_tiled_file_decodes_to_the_encoders_reconstruction(lively, tiled_image_and_file):
    image, data, recon, reports = tiled_image_and_file
    header, streams = container.unpack(data)
    assert streams == [] and header.tile_size == 64 and len(header.tiles) == 3 * 2
    assert reports[-1] == (6, 6, "tile 6/6")
    decode_reports = []
    decoded = lively.decode(data, progress=lambda *report: decode_reports.append(report))
    assert decoded.shape == image.shape and np.array_equal(decoded, recon)
    assert np.array_equal(decoded[..., 3], image[..., 3])
    assert [done for done, _, _ in decode_reports] == [1, 2, 3, 4, 5, 6]


def test_each_tile_is_a_file_of_its_own_and_only_the_seams_are_filtered(lively, tiled_image_and_file):
    from bgcodec.seams import smooth_tile_borders

    _, data, recon, _ = tiled_image_and_file
    header, _ = container.unpack(data)
    boxes = container.tile_boxes(150, 100, 64)
    assembled = np.empty((150, 100, 3), np.uint8)
    for (top, left, height, width), tile in zip(boxes, header.tiles):
        assembled[top:top + height, left:left + width] = lively.decode(tile)
    filtered = assembled.copy()
    smooth_tile_borders(filtered, boxes, [True] * len(boxes))
    assert np.array_equal(filtered, recon[..., :3])
    changed = np.argwhere((assembled != recon[..., :3]).any(axis=2))
    assert len(changed)
    seams = np.array([64, 128])
    assert all(np.abs(seams - y).min() <= 2 or abs(x - 64) <= 2 for y, x in changed)


def test_a_tile_runner_gets_picklable_work_and_gives_the_same_file(lively, tiled_image_and_file):
    import pickle

    image, data, recon, _ = tiled_image_and_file
    handed = []

    def runner(work, tasks):  # as worker processes would see them: pickled, with a codec of their own
        tasks = list(tasks)
        handed.append(len(tasks))
        return (pickle.loads(pickle.dumps(work))(lively, pickle.loads(pickle.dumps(task))) for task in tasks)

    reports = []
    again, again_recon = lively.encode(image, LMBDA, tile_size=64, return_reconstruction=True, tile_runner=runner,
                                       progress=lambda *report: reports.append(report))
    assert again == data and np.array_equal(again_recon, recon)
    assert np.array_equal(lively.decode(data, tile_runner=runner), recon)
    assert handed == [6, 6] and reports[-1] == (6, 6, "tile 6/6")


def test_an_image_within_one_tile_is_coded_as_before(lively):
    image = smooth_image(64, 100, seed=2)
    data = lively.encode(image, LMBDA, tile_size=128)
    assert data == lively.encode(image, LMBDA, tile_size=1024)
    assert container.unpack(data)[0].tiles is None


def test_tiles_small_enough_are_stored_losslessly(shipped):
    image = np.concatenate([smooth_image(64, 64, seed=3), random_image(2, 64, seed=3)])  # a tile and a noisy strip
    data = shipped.encode(image, 0.01, tile_size=64)
    first, strip = (container.unpack(tile)[0] for tile in container.unpack(data)[0].tiles)
    assert first.pixels is None and strip.pixels is not None
    assert np.array_equal(shipped.decode(data)[64:], image[64:])


def test_bad_tile_sizes_are_refused(codec):
    for size in (0, 100, -64):
        with pytest.raises(BgcodecError, match="tile size"):
            codec.encode(smooth_image(8, 8), LMBDA, tile_size=size)


def test_memory_is_checked_for_one_tile_not_the_whole_image(codec, monkeypatch):
    from bgcodec import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 130 * 90 * resources.IMAGE_BYTES_PER_PIXEL
                        + 64 * 64 * resources.ENCODE_BYTES_PER_PIXEL)
    image = smooth_image(90, 130, seed=4)
    assert codec.encode(image, LMBDA, tile_size=64)
    with pytest.raises(BgcodecError, match="needs about"):
        codec.encode(image, LMBDA, tile_size=128)


# -- model identity ----------------------------------------------------------------------------


def test_other_weights_refuse_file(codec):
    other = Codec.load("random:tiny:1", "cpu")
    assert other.identity != codec.identity
    data = codec.encode(random_image(16, 16), LMBDA)
    with pytest.raises(FormatError) as e:
        other.decode(data, "x.bgv")
    msg = str(e.value)
    assert codec.identity.hex() in msg and other.identity.hex() in msg and "x.bgv" in msg


# -- λ ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_lambda_out_of_range(codec, factor):
    lo, hi = codec.lambda_range
    bad = lo * factor if factor < 1 else hi * factor
    with pytest.raises(BgcodecError) as e:
        codec.encode(random_image(8, 8), bad)
    msg = str(e.value)
    assert f"{lo:.4g}" in msg and f"{hi:.4g}" in msg


@pytest.mark.parametrize("end", [0, 1])
def test_lambda_at_range_ends(lively, end):
    lmbda = lively.lambda_range[end]
    image = smooth_image(40, 50)
    data, recon = lively.encode(image, lmbda, return_reconstruction=True)
    assert np.array_equal(lively.decode(data), recon)
    header, _ = container.unpack(data)
    assert header.lmbda == pytest.approx(lively.model.cfg.lmbda_range[end], rel=1e-6)


def test_lambda_changes_rate(lively):
    image = smooth_image(64, 64, seed=3)
    lo, hi = lively.lambda_range
    mid = (lo * hi) ** 0.5
    sizes = [len(lively.encode(image, lmbda)) for lmbda in (lo, mid, hi)]
    # Even untrained, the quantisation step Δ ∝ λ^-½ makes the rate follow λ.
    assert sizes[0] < sizes[1] < sizes[2], sizes


def test_shallow_files_decode_with_either_synthesis(lively):
    image = smooth_image(48, 80, seed=6)
    data, recon = lively.encode(image, LMBDA, synthesis="shallow", return_reconstruction=True)
    assert container.unpack(data)[0].synthesis == "shallow"
    assert np.array_equal(lively.decode(data), recon)
    assert np.array_equal(lively.decode(data, synthesis="shallow"), recon)
    full = lively.decode(data, synthesis="full")
    assert full.shape == recon.shape and not np.array_equal(full, recon)
    # The latents do not depend on the synthesis the file targets (without --effort).
    assert container.unpack(lively.encode(image, LMBDA))[1] == container.unpack(data)[1]
    with pytest.raises(BgcodecError, match="synthesis"):
        lively.decode(data, synthesis="deep")


# -- corruption --------------------------------------------------------------------------------------


def test_corrupted_payload_byte(codec):
    data = bytearray(codec.encode(smooth_image(63, 64), LMBDA))
    header, streams = container.unpack(bytes(data))
    payload_start = container.header_size(header, streams)
    for pos in (payload_start, payload_start + len(streams[0]) + 1, len(data) - 5):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(FormatError, match="checksum"):
            codec.decode(bytes(bad), "bad.bgv")


def test_truncated_and_empty(codec):
    data = codec.encode(smooth_image(20, 20), LMBDA)
    for cut in (0, 3, 10, len(data) - 1):
        with pytest.raises(FormatError):
            codec.decode(data[:cut])


def _forgeries(data, seed=0, count=40):
    """Files with a valid container CRC but altered latent streams or header fields."""
    header, streams = container.unpack(data)
    rng = np.random.default_rng(seed)
    out = []
    for n in range(count):
        s = [bytearray(x) for x in streams]
        i = int(rng.integers(len(s)))
        kind = n % 4
        if kind == 0 and s[i]:  # flip one byte
            s[i][int(rng.integers(len(s[i])))] ^= int(rng.integers(1, 256))
        elif kind == 1 and len(s[i]) >= 4:  # drop a word
            del s[i][:4]
        elif kind == 2:  # append a word
            s[i] += bytes(rng.integers(0, 256, 4, dtype=np.uint8))
        else:  # swap two streams
            j = (i + 1) % len(s)
            s[i], s[j] = s[j], s[i]
        out.append(container.pack(header, [bytes(x) for x in s]))
    for lm in (header.lmbda * 1.5, 1e-30, 1e30):
        out.append(container.pack(container.Header(header.model_id, lm, header.height, header.width,
                                                   header.synthesis, header.index_checksum), streams))
    out.append(container.pack(container.Header(header.model_id, header.lmbda, header.height, header.width,
                                               header.synthesis, header.index_checksum ^ 1), streams))
    out.append(container.pack(container.Header(header.model_id, header.lmbda, header.height + 64,
                                               header.width, header.synthesis, header.index_checksum), streams))
    out.append(container.pack(header, streams[:3]))  # fewer latents, wrong checksum
    return out


def test_forged_streams_raise_only_format_error(lively):
    image = random_image(70, 130, seed=5)
    data = lively.encode(image, LMBDA)
    outcomes = {"FormatError": 0, "decoded": 0}
    for forged in _forgeries(data):
        if forged == data:
            continue
        try:
            out = lively.decode(forged, "forged.bgv")
        except FormatError as e:
            assert str(e).startswith("forged.bgv: ")
            outcomes["FormatError"] += 1
        else:  # an undetected change is allowed, a crash is not
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
            outcomes["decoded"] += 1
    # Most forgeries of early latents change later probabilities and are caught.
    assert outcomes["FormatError"] > outcomes["decoded"], outcomes


def test_index_checksum_detects_probability_mismatch(lively):
    image = smooth_image(64, 64, seed=1)
    data = lively.encode(image, LMBDA)
    header, streams = container.unpack(data)
    forged = container.pack(container.Header(header.model_id, header.lmbda, header.height, header.width,
                                             header.synthesis, header.index_checksum ^ 0x80000000), streams)
    with pytest.raises(FormatError, match="scale-index checksum"):
        lively.decode(forged)


def test_pinned_scales_absorb_a_decoder_drift_below_the_margin(lively, monkeypatch):
    """A decoder whose ln σ are all off by up to 0.9 × the margin still rebuilds every
    table, thanks to the pins; without them the same drift breaks the file."""
    monkeypatch.setattr(entropy, "PIN_MARGIN", 0.01)  # pin many scales, so drift can hurt
    image = random_image(70, 130, seed=8)
    data = lively.encode(image, LMBDA)
    header, streams = container.unpack(data)
    assert len(header.pins) > 20
    clean = lively.decode(data)
    exact = entropy.scale_indices
    rng = np.random.default_rng(0)
    monkeypatch.setattr(entropy, "scale_indices",
                        lambda s: exact(s + rng.uniform(-0.009, 0.009, np.shape(s))))
    assert np.array_equal(lively.decode(data), clean)
    unpinned = container.pack(dataclasses.replace(header, pins=()), streams)
    with pytest.raises(FormatError, match="corrupt"):
        lively.decode(unpinned)


def test_a_pin_outside_its_latent_is_refused(lively):
    header, streams = container.unpack(lively.encode(random_image(64, 64, seed=1), LMBDA))
    forged = container.pack(dataclasses.replace(header, pins=((0, 10_000, 3),)), streams)
    with pytest.raises(FormatError, match="latent 1: a pinned scale lies outside the latent"):
        lively.decode(forged, "forged.bgv")


# -- weights files -----------------------------------------------------------------------------------


def test_weights_save_load_round_trip(lively, tmp_path):
    path = tmp_path / "lively.safetensors"
    weights.save_model(lively.model, path, {"note": "test"})
    loaded = weights.load_model(str(path))
    assert loaded.identity == lively.identity
    assert loaded.model.cfg == lively.model.cfg
    assert loaded.lambda_range == pytest.approx(lively.lambda_range, rel=1e-12)
    assert loaded.metadata["note"] == "test"
    assert json.loads(loaded.metadata["config"]) == json.loads(json.dumps(lively.model.cfg.to_dict()))
    reloaded = Codec.load(str(path), "cpu")
    image = random_image(63, 64, seed=7)
    data, recon = lively.encode(image, LMBDA, return_reconstruction=True)
    assert reloaded.encode(image, LMBDA) == data
    assert np.array_equal(reloaded.decode(data), recon)


def test_model_identity_depends_on_values_names_and_shapes():
    a = {"w": torch.zeros(2, 3)}
    assert weights.model_identity(a) == weights.model_identity({"w": torch.zeros(2, 3)})
    assert len(weights.model_identity(a)) == 4
    assert weights.model_identity(a) != weights.model_identity({"w": torch.zeros(3, 2)})
    assert weights.model_identity(a) != weights.model_identity({"v": torch.zeros(2, 3)})
    b = {"w": torch.zeros(2, 3)}
    b["w"][1, 2] = 1e-30
    assert weights.model_identity(a) != weights.model_identity(b)
    assert weights.model_identity(a) != weights.model_identity({"w": torch.zeros(2, 3, dtype=torch.float64)})


def test_random_specs():
    assert weights.load_model("random:tiny").identity == weights.load_model("random:tiny:0").identity
    assert weights.load_model("random:tiny").identity != weights.load_model("random:tiny:1").identity
    for bad in ("random:huge", "random:tiny:x", "random:tiny:1:2", "random:"):
        with pytest.raises(WeightsError):
            weights.load_model(bad)


def test_weights_not_safetensors(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(WeightsError) as e:
        weights.load_model(str(path))
    assert str(path) in str(e.value)


def test_weights_missing_file(tmp_path):
    path = tmp_path / "nope" / "absent.safetensors"
    with pytest.raises(WeightsError) as e:
        weights.load_model(str(path))
    assert str(path) in str(e.value)


def test_weights_without_config_metadata(codec, tmp_path):
    path = tmp_path / "nometa.safetensors"
    state = {k: v.contiguous() for k, v in codec.model.state_dict().items()}
    save_file(state, str(path))
    with pytest.raises(WeightsError) as e:
        weights.load_model(str(path))
    assert str(path) in str(e.value) and "config" in str(e.value)
    path2 = tmp_path / "badmeta.safetensors"
    save_file(state, str(path2), metadata={"config": "{not json", "lambda_range": "[0.1, 1]"})
    with pytest.raises(WeightsError) as e:
        weights.load_model(str(path2))
    assert str(path2) in str(e.value)
    path3 = tmp_path / "unknownfield.safetensors"
    cfg = dict(codec.model.cfg.to_dict(), colour="blue")
    save_file(state, str(path3), metadata={"config": json.dumps(cfg), "lambda_range": "[0.1, 1]"})
    with pytest.raises(WeightsError) as e:
        weights.load_model(str(path3))
    assert str(path3) in str(e.value)


def test_weights_that_do_not_fit(codec, tmp_path):
    small_cfg = weights.load_model("random:small").model.cfg
    state = {k: v.contiguous() for k, v in codec.model.state_dict().items()}
    meta = {"config": json.dumps(small_cfg.to_dict()), "lambda_range": "[0.004, 0.5]"}
    path = tmp_path / "wrongconfig.safetensors"
    save_file(state, str(path), metadata=meta)
    with pytest.raises(WeightsError) as e:
        weights.load_model(str(path))
    assert str(path) in str(e.value)
    # The right config but a missing tensor.
    tiny_meta = {"config": json.dumps(codec.model.cfg.to_dict()), "lambda_range": "[0.004, 0.5]"}
    path2 = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in state.items() if k != "bias"}, str(path2), metadata=tiny_meta)
    with pytest.raises(WeightsError) as e:
        weights.load_model(str(path2))
    assert str(path2) in str(e.value)


def test_codec_from_saved_file_matches_random_spec(codec, tmp_path):
    path = tmp_path / "tiny.safetensors"
    weights.save_model(codec.model, path)
    assert Codec.load(str(path), "cpu").identity == codec.identity
    data = codec.encode(smooth_image(30, 30), LMBDA)
    assert np.array_equal(Codec.load(str(path), "cpu").decode(data), codec.decode(data))


def test_container_lambda_is_float32(codec):
    data = codec.encode(smooth_image(8, 8), LMBDA)
    header, _ = container.unpack(data)
    assert header.lmbda == struct.unpack("<f", struct.pack("<f", header.lmbda))[0]
    assert header.lmbda == codec.check_lambda(LMBDA)


def test_half_precision_weights_round_trip(lively, tmp_path):
    path = tmp_path / "half.safetensors"
    weights.save_model(lively.model, path, {"note": "kept"}, half=True)
    loaded = weights.load_model(str(path))
    assert loaded.metadata["note"] == "kept"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    codec = Codec(loaded, torch.device("cpu"))
    image = smooth_image(70, 90)
    data, recon = codec.encode(image, 0.02, return_reconstruction=True)
    assert np.array_equal(codec.decode(data), recon)
    assert path.stat().st_size < 0.6 * sum(p.numel() * 4 for p in lively.model.parameters())


def test_uneven_latent_groups_survive_the_weights_file_and_code_for_real(tmp_path):
    from bgcodec.config import CONFIGS
    from bgcodec.model import BGVAE

    cfg = dataclasses.replace(CONFIGS["tiny"], latent_channels=(4, 4, 4, (2, 4, 6)))
    torch.manual_seed(4)
    path = tmp_path / "uneven.safetensors"
    weights.save_model(perturb(BGVAE(cfg)), path)
    codec = Codec.load(str(path), "cpu")
    assert codec.model.cfg == cfg and codec.model.cfg.stage_channels(3) == (2, 4, 6)
    image = smooth_image(40, 72, seed=6)
    data, reconstruction = codec.encode(image, LMBDA, lossless_fallback=False, return_reconstruction=True)
    assert np.array_equal(codec.decode(data), reconstruction)
    with pytest.raises(ValueError, match="2 latent widths for 3 latents"):
        BGVAE(dataclasses.replace(cfg, latent_channels=(4, 4, 4, (2, 4))))


def test_checkerboard_latents_code_in_two_streams_each_and_decode_from_any_depth(tmp_path):
    from bgcodec.config import CONFIGS
    from bgcodec.model import BGVAE

    cfg = dataclasses.replace(CONFIGS["tiny"], checkerboard=(False, False, False, True))
    torch.manual_seed(5)
    model = perturb(BGVAE(cfg))
    with torch.no_grad():
        for latent in model.stages[3].latents:
            latent.context.weight.normal_(0, 0.3)  # a live context: the second halves depend on the first
    path = tmp_path / "checkerboard.safetensors"
    weights.save_model(model, path)
    codec = Codec.load(str(path), "cpu")
    assert codec.model.cfg == cfg
    image = smooth_image(40, 72, seed=8)
    for depth, streams in ((9, 12), (7, 8), (6, 6)):
        data, reconstruction = codec.encode(image, LMBDA, depth=depth, lossless_fallback=False,
                                            return_reconstruction=True)
        assert len(container.unpack(data)[1]) == streams
        assert np.array_equal(codec.decode(data), reconstruction)
    effort, reconstruction = codec.encode(image, LMBDA, effort=1, lossless_fallback=False, return_reconstruction=True)
    assert np.array_equal(codec.decode(effort), reconstruction)
