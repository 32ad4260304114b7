"""Tests for bgcodec.entropy (ANS coding of latent residuals)."""

import math
import subprocess
import sys

import numpy as np
import pytest

from bgcodec import entropy
from bgcodec.entropy import (
    LOG_SCALE_BOUNDS,
    MAX_ABS_SYMBOL,
    SCALE_TABLE,
    decode_symbols,
    encode_symbols,
    indices_checksum,
    near_threshold,
    scale_indices,
)
from bgcodec.errors import FormatError

FREQUENCY_TABLES_SHA256 = "919c1e3ad3ccfe1c180bd8e4c12049235d1f0137ecb0b4c62e0df318f46df7e2"


def _sample(rng, shape, lo=0, hi=64):
    idx = rng.integers(lo, hi, size=shape).astype(np.int32)
    sym = np.round(rng.standard_normal(shape) * SCALE_TABLE[idx]).astype(np.int32)
    return sym, idx


def _roundtrip(sym, idx):
    data = encode_symbols(sym, idx)
    assert isinstance(data, bytes)
    assert len(data) % 4 == 0
    out = decode_symbols(data, idx)
    assert out.dtype == np.int32
    assert out.shape == np.shape(idx)
    np.testing.assert_array_equal(out, sym)
    return data


# --- scale table and indices ---------------------------------------------------


def test_scale_table():
    assert SCALE_TABLE.dtype == np.float64
    assert SCALE_TABLE.shape == (64,)
    assert math.isclose(SCALE_TABLE[0], 0.11, rel_tol=1e-12)
    assert math.isclose(SCALE_TABLE[-1], 20.0, rel_tol=1e-12)
    ratios = SCALE_TABLE[1:] / SCALE_TABLE[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)
    assert np.all(np.diff(SCALE_TABLE) > 0)


def test_scale_table_is_built_without_libm():
    """The table the coder sees is the same float64 numbers on every machine: products
    of literals, equal to the log-spaced table to rounding."""
    np.testing.assert_allclose(SCALE_TABLE, np.exp(np.linspace(np.log(0.11), np.log(20.0), 64)), rtol=1e-14)
    assert SCALE_TABLE[0] == 0.11
    assert all(SCALE_TABLE[i + 1] == SCALE_TABLE[i] * entropy._SCALE_RATIO for i in range(63))


def test_scale_indices_round_up_and_clip():
    bounds = LOG_SCALE_BOUNDS
    # Exactly on an entry -> that entry; just above -> the next one.
    assert scale_indices(np.array([bounds[10]]))[0] == 10
    assert scale_indices(np.array([np.nextafter(bounds[10], np.inf)]))[0] == 11
    assert scale_indices(np.array([np.nextafter(bounds[10], -np.inf)]))[0] == 10
    # Midway between two entries -> the upper one (scale is rounded up).
    mid = np.log((SCALE_TABLE[20] + SCALE_TABLE[21]) / 2)
    assert scale_indices(np.array([mid]))[0] == 21
    # Clipping.
    s = scale_indices(np.log(np.array([1e-30, 1e-6, 0.05, 0.11, 20.0, 25.0, 1e9])))
    assert s.tolist() == [0, 0, 0, 0, 63, 63, 63]
    assert s.dtype == np.int32


def test_scale_indices_shape_and_smallest_ge():
    rng = np.random.default_rng(1)
    log_sigma = rng.uniform(np.log(0.01), np.log(40), size=(3, 5, 7))
    idx = scale_indices(log_sigma)
    assert idx.shape == log_sigma.shape and idx.dtype == np.int32
    sigma = np.exp(log_sigma)
    inside = (sigma > SCALE_TABLE[0] * (1 + 1e-12)) & (sigma <= SCALE_TABLE[-1] * (1 - 1e-12))
    assert np.all(SCALE_TABLE[idx[inside]] >= sigma[inside] * (1 - 1e-12))
    assert np.all(SCALE_TABLE[idx[inside] - 1] < sigma[inside])
    # float32 inputs give the indices of their float64 values.
    np.testing.assert_array_equal(scale_indices(log_sigma.astype(np.float32)),
                                  scale_indices(log_sigma.astype(np.float32).astype(np.float64)))


def test_near_threshold_finds_exactly_the_scales_within_the_margin():
    bounds = LOG_SCALE_BOUNDS
    values = np.array([bounds[0] - 5e-8, bounds[0] - 2e-7, bounds[30] + 9e-8, bounds[30] + 1.1e-7,
                       (bounds[40] + bounds[41]) / 2, bounds[62] + 5e-8, bounds[62] + 1.0, -50.0, np.nan])
    np.testing.assert_array_equal(near_threshold(values.reshape(3, 3), 1e-7), [0, 2, 5, 8])
    assert near_threshold(values, 1e-9).tolist() == [8]  # only NaN
    assert near_threshold(np.zeros((0,))).size == 0


def test_a_drift_below_the_margin_changes_no_unpinned_index():
    """The promise pinning rests on: away from the pinned positions, moving every ln σ by
    less than the margin leaves every index as it was."""
    rng = np.random.default_rng(5)
    log_sigma = rng.uniform(-3, 3.2, size=200_000)
    log_sigma[:64] = LOG_SCALE_BOUNDS[rng.integers(0, 63, 64)] + rng.uniform(-2e-7, 2e-7, 64)
    pinned = np.zeros(log_sigma.size, bool)
    pinned[near_threshold(log_sigma)] = True
    moved = log_sigma + rng.uniform(-0.99, 0.99, log_sigma.size) * entropy.PIN_MARGIN
    same = scale_indices(moved) == scale_indices(log_sigma)
    assert same[~pinned].all()
    assert not same[pinned].all()  # the test can fail: pinned scales do flip


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (0, 3), (1,), (1, 1, 1), (7,), (4, 5, 6), (2, 16, 12, 8)])
def test_roundtrip_shapes(shape):
    rng = np.random.default_rng(sum(shape) + len(shape))
    sym, idx = _sample(rng, shape)
    data = _roundtrip(sym, idx)
    if sym.size == 0:
        assert data == b""


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16])
def test_symbol_dtypes(dtype):
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 64, size=200).astype(np.int32)
    sym = rng.integers(0, 100, size=200).astype(dtype)
    if np.issubdtype(dtype, np.signedinteger):
        sym[::2] = -sym[::2]
    out = decode_symbols(encode_symbols(sym, idx), idx)
    np.testing.assert_array_equal(out, sym.astype(np.int64))


def test_index_dtypes():
    rng = np.random.default_rng(4)
    sym, idx = _sample(rng, (50,))
    data = encode_symbols(sym, idx.astype(np.uint8))
    np.testing.assert_array_equal(decode_symbols(data, idx.astype(np.int64)), sym)


def test_escapes_roundtrip():
    rng = np.random.default_rng(5)
    special = np.array(
        [254, -254, 255, -255, 256, -256, 257, -257, 258, 511, -512, 10000, -10000,
         2**23, -(2**23), 2**24, -(2**24), MAX_ABS_SYMBOL, -MAX_ABS_SYMBOL],
        dtype=np.int64,
    )
    sym, idx = _sample(rng, (2000,))
    sym = sym.astype(np.int64)
    pos = rng.choice(sym.size, size=special.size, replace=False)
    sym[pos] = special
    _roundtrip(sym, idx)
    # Escapes only, at both extreme scales.
    for i in (0, 63):
        _roundtrip(special, np.full(special.shape, i, dtype=np.int32))


def test_escape_bit_boundaries():
    # v = |k| - 254 crossing every power of two exercises every nb value 0..23.
    R = entropy.SUPPORT_RADIUS
    vs = np.array(sorted({max(1, x + d) for b in range(25) for x in [1 << b] for d in (-1, 0, 1)}))
    vs = vs[vs + R - 1 <= MAX_ABS_SYMBOL]
    k = np.concatenate([vs + R - 1, -(vs + R - 1)])
    idx = np.arange(k.size, dtype=np.int32) % 64
    _roundtrip(k, idx)


def test_heavy_tail_roundtrip():
    rng = np.random.default_rng(6)
    idx = rng.integers(0, 64, size=20000).astype(np.int32)
    sym = np.round(rng.standard_t(1.2, size=20000) * 5).clip(-MAX_ABS_SYMBOL, MAX_ABS_SYMBOL)
    sym = sym.astype(np.int64)
    assert np.sum(np.abs(sym) >= 255) > 100
    _roundtrip(sym, idx)


def test_extreme_scales():
    rng = np.random.default_rng(7)
    for i in (0, 63):
        idx = np.full(500, i, dtype=np.int32)
        _roundtrip(np.zeros(500, dtype=np.int32), idx)
        # Symbols far out in the tail relative to sigma (but in the support).
        big = rng.integers(-254, 255, size=500).astype(np.int32)
        _roundtrip(big, idx)
    # sigma = 0.11 with all-zero symbols costs almost nothing.
    n = 10000
    data = encode_symbols(np.zeros(n, np.int32), np.zeros(n, np.int32))
    assert len(data) <= 8


def test_single_minus_r_encodes_to_empty_stream():
    # -255 with escape payload nb=0 sits at the bottom of every CDF, so the ANS
    # state never grows; the empty stream is its valid encoding.
    idx = np.array([3, 9], dtype=np.int32)
    sym = np.array([-255, -255])
    _roundtrip(sym, idx)


def _ideal_bits(sym, sigma):
    """Σ -log2 P(k) for the (untruncated) discretised Gaussian, via math.erfc."""
    total = 0.0
    r2 = math.sqrt(2.0)
    for k, s in zip(np.abs(sym).tolist(), sigma.tolist()):
        if k == 0:
            p = math.erf(0.5 / (s * r2))
        else:
            p = 0.5 * (math.erfc((k - 0.5) / (s * r2)) - math.erfc((k + 0.5) / (s * r2)))
        total -= math.log2(p)
    return total


def test_code_size_close_to_ideal():
    rng = np.random.default_rng(8)
    n = 100_000
    sym, idx = _sample(rng, (n,))
    assert np.abs(sym).max() < 255
    data = encode_symbols(sym, idx)
    actual = 8 * len(data)
    ideal = _ideal_bits(sym, SCALE_TABLE[idx])
    assert abs(actual - ideal) <= 0.01 * ideal, (actual, ideal)
    np.testing.assert_array_equal(decode_symbols(data, idx), sym)


# --- invalid input on the encode side -------------------------------------------


@pytest.mark.parametrize("bad", [MAX_ABS_SYMBOL + 1, -MAX_ABS_SYMBOL - 1, 2**31 - 1, -(2**31), 2**40, -(2**63)])
def test_out_of_range_symbol_raises(bad):
    sym = np.array([0, 3, bad, -1], dtype=np.int64)
    idx = np.array([5, 6, 7, 8], dtype=np.int32)
    with pytest.raises(ValueError, match="out of range"):
        encode_symbols(sym, idx)


def test_out_of_range_uint64_raises():
    with pytest.raises(ValueError):
        encode_symbols(np.array([2**63 + 5], dtype=np.uint64), np.array([1], dtype=np.int32))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError):
        encode_symbols(np.zeros(3, np.int32), np.zeros(4, np.int32))
    with pytest.raises(ValueError):
        encode_symbols(np.zeros(3, np.float32), np.zeros(3, np.int32))
    with pytest.raises(ValueError):
        encode_symbols(np.zeros(3, np.int32), np.array([0, 64, 1]))
    with pytest.raises(ValueError):
        encode_symbols(np.zeros(3, np.int32), np.array([0, -1, 1]))
    with pytest.raises(ValueError):
        decode_symbols(b"", np.array([0, 64]))


def test_guard_converts_base_exceptions():
    class FakePanic(BaseException):
        pass

    def boom():
        raise FakePanic("panic")

    with pytest.raises(ValueError):
        entropy._guard("x", boom, ValueError)
    with pytest.raises(FormatError, match="latent stream is corrupt"):
        entropy._guard("x", boom, FormatError)

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        entropy._guard("x", interrupt, FormatError)


# --- corrupt streams ---------------------------------------------------------------


def _decode_corrupt(data, idx, original):
    """Decoding corrupt data must raise FormatError or give a different array."""
    try:
        out = decode_symbols(data, idx)
    except FormatError as e:
        assert str(e).startswith("latent stream is corrupt")
        return
    assert out.shape == idx.shape
    assert not np.array_equal(out, original)


def test_not_multiple_of_four():
    rng = np.random.default_rng(9)
    sym, idx = _sample(rng, (300,))
    data = encode_symbols(sym, idx)
    for cut in (1, 2, 3):
        with pytest.raises(FormatError, match="multiple of 4"):
            decode_symbols(data[:-cut], idx)
    with pytest.raises(FormatError):
        decode_symbols(data + b"\x01", idx)


def test_truncated_and_extended_words():
    rng = np.random.default_rng(10)
    sym, idx = _sample(rng, (2000,))
    sym[::97] = 3000  # some escapes too
    data = encode_symbols(sym, idx)
    assert len(data) >= 16
    for n in range(0, len(data), 4):
        _decode_corrupt(data[:n], idx, sym)  # words missing at the end
        if n:
            _decode_corrupt(data[n:], idx, sym)  # words missing at the start
    with pytest.raises(FormatError):
        decode_symbols(data + b"\x07\x00\x00\x00", idx)


def test_random_bytes():
    rng = np.random.default_rng(11)
    sym, idx = _sample(rng, (400,))
    sym[::50] = -70000
    for trial in range(300):
        n = 4 * int(rng.integers(0, 64))
        data = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        if trial % 3 == 0 and n:
            data = data[:-4] + b"\x00\x00\x00\x00"  # zero last word: invalid ANS
        _decode_corrupt(data, idx, sym)


def test_bit_flips():
    rng = np.random.default_rng(12)
    sym, idx = _sample(rng, (500,))
    sym[::40] = 99999
    data = bytearray(encode_symbols(sym, idx))
    for pos in range(len(data)):
        d = bytearray(data)
        d[pos] ^= 1 << int(rng.integers(0, 8))
        _decode_corrupt(bytes(d), idx, sym)


def test_empty_data_for_empty_indices_only():
    assert decode_symbols(b"", np.zeros((2, 0), np.int32)).shape == (2, 0)
    with pytest.raises(FormatError):
        decode_symbols(b"\x01\x00\x00\x00", np.zeros((0,), np.int32))


# --- checksum ------------------------------------------------------------------------


def test_indices_checksum():
    rng = np.random.default_rng(13)
    lats = [rng.integers(0, 64, size=s).astype(np.int32) for s in [(4, 3, 3), (8, 6, 6), (2, 12, 12)]]
    c = indices_checksum(lats)
    assert isinstance(c, int) and 0 <= c < 2**32
    assert c == indices_checksum([a.astype(np.int64) for a in lats])  # dtype-independent
    for which in range(3):
        for _ in range(5):
            changed = [a.copy() for a in lats]
            flat = changed[which].reshape(-1)
            p = int(rng.integers(0, flat.size))
            flat[p] = (flat[p] + int(rng.integers(1, 64))) % 64
            assert indices_checksum(changed) != c
    # The order of the latents matters.
    assert indices_checksum(lats[::-1]) != c
    assert indices_checksum([]) == 0


def test_no_torch_import():
    code = "import sys, bgcodec.entropy; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the probability tables ------------------------------------------------------


def test_erfc_matches_libm():
    x = np.linspace(0, 45, 9001)
    reference = np.array([math.erfc(v) for v in x])
    assert np.abs(entropy.erfc(x) - reference).max() < 1e-12


def test_frequency_tables_are_distributions_with_full_support():
    for index in (0, 17, 40, 63):
        freq = entropy.frequency_table(index)
        assert freq.shape == (2 * entropy.SUPPORT_RADIUS + 1,) and freq.dtype == np.int64
        assert freq.sum() == 1 << entropy.PROBABILITY_BITS and freq.min() >= 1
        np.testing.assert_array_equal(freq, freq[::-1])  # zero-mean, symmetric
        assert freq.argmax() == entropy.SUPPORT_RADIUS


def test_frequency_tables_are_the_formats():
    """The 64 tables are part of the format: any change to them breaks existing files."""
    import hashlib

    digest = hashlib.sha256()
    for index in range(entropy.SCALE_LEVELS):
        digest.update(entropy.frequency_table(index).astype("<i8").tobytes())
    assert digest.hexdigest() == FREQUENCY_TABLES_SHA256


def test_grouped_coding_costs_what_the_tables_say():
    rng = np.random.default_rng(11)
    sym, idx = _sample(rng, (40_000,), 0, 40)
    data = encode_symbols(sym, idx)
    bits = -sum(np.log2(entropy.frequency_table(i)[s + entropy.SUPPORT_RADIUS] / 2**24) for s, i in zip(sym, idx))
    assert 8 * len(data) == pytest.approx(bits, rel=0.01, abs=64)
