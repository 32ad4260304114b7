"""ANS entropy coding of one latent tensor's integer residuals (docs/FORMAT.md §5).

Each symbol ``k = round(qm - pm)`` is coded with a zero-mean discretised
Gaussian whose standard deviation is ``SCALE_TABLE[idx]``.  The coder therefore
depends only on integer inputs (symbols and scale indices), never on raw network
floats, and its 64 probability tables are integers computed with IEEE 754
additions, multiplications and divisions alone, so they are the same on every
machine (docs/DESIGN.md, portable bitstreams).

Stream layout (one ``constriction`` ANS stack per call, read in this order):

1. main symbols ``clip(k, -R, R)``, grouped by scale index (ascending; C order
   within a group), each group with its index's categorical table;
2. for each escaped position (``|k| >= R``), in forward order, the Exp-Golomb
   prefix ``nb = floor(log2 v)`` of the excess ``v = |k| - R + 1`` with
   ``Uniform(32)``;
3. for each escaped position with ``nb > 0``, the remainder ``v - 2**nb`` with
   ``Uniform(2**nb)``.

This module imports neither torch nor anything outside numpy, constriction and
the standard library.
"""

from __future__ import annotations

import functools
import zlib
from typing import Callable, TypeVar

import constriction
import numpy as np

from bgcodec.errors import FormatError

__all__ = [
    "SCALE_TABLE",
    "SUPPORT_RADIUS",
    "MAX_ABS_SYMBOL",
    "scale_indices",
    "near_threshold",
    "encode_symbols",
    "decode_symbols",
    "indices_checksum",
]

SCALE_MIN = 0.11
SCALE_MAX = 20.0
SCALE_LEVELS = 64
_SCALE_RATIO = 1.0860936108821257
"""(SCALE_MAX / SCALE_MIN) ** (1 / 63), written out: the table is built by multiplication
alone, which IEEE 754 rounds the same way everywhere (``exp`` and ``pow`` differ between
math libraries in the last bit)."""


def _geometric_table() -> np.ndarray:
    table = [SCALE_MIN]
    for _ in range(SCALE_LEVELS - 1):
        table.append(table[-1] * _SCALE_RATIO)
    return np.array(table, dtype=np.float64)


SCALE_TABLE: np.ndarray = _geometric_table()
"""64 standard deviations log-spaced from 0.11 to 20 (QARV / CompressAI table), float64,
identical on every machine."""
SCALE_TABLE.setflags(write=False)

LOG_SCALE_BOUNDS: np.ndarray = np.log(SCALE_TABLE[:-1])
"""The 63 thresholds in ln σ between neighbouring indices. They may differ between machines
in the last bit; that is one more source of drift, which pinning (below) absorbs."""
LOG_SCALE_BOUNDS.setflags(write=False)

PIN_MARGIN = 1e-7
"""A scale whose ln σ lies closer than this to a threshold is pinned: the encoder stores its
index in the file (docs/DESIGN.md, portable bitstreams)."""

SUPPORT_RADIUS = 255
"""R: the Gaussian model's support is {-R, ..., R}; |k| >= R is an escape."""

_NB_ALPHABET = 32
"""Alphabet size of the Exp-Golomb prefix model."""

_MAX_NB = 23
"""constriction's Uniform needs size < 2**24, so the raw part has at most 23 bits."""

MAX_ABS_SYMBOL = SUPPORT_RADIUS - 1 + (1 << (_MAX_NB + 1)) - 1
"""Largest |k| that can be coded: v = |k| - R + 1 must stay below 2**24."""

_T = TypeVar("_T")


def _guard(what: str, fn: Callable[[], _T], exc: type[Exception]) -> _T:
    """Run a constriction call, turning any failure (including pyo3's
    ``PanicException``, a ``BaseException``) into ``exc``."""
    try:
        return fn()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - PanicException is not an Exception
        if issubclass(exc, FormatError):
            raise FormatError(f"latent stream is corrupt: {what} failed") from e
        raise exc(f"entropy coder failed while {what}: {type(e).__name__}: {e}") from e


def scale_indices(log_sigma: np.ndarray) -> np.ndarray:
    """Index of the smallest table entry >= σ (the scale is rounded up), from ln σ.

    The result is clipped to [0, 63] and has dtype int32 and the shape of ``log_sigma``.

    >>> scale_indices(np.log(np.array([0.05, 0.11, 0.115, 1e9])))
    array([ 0,  0,  1, 63], dtype=int32)
    """
    s = np.asarray(log_sigma, dtype=np.float64)
    return np.searchsorted(LOG_SCALE_BOUNDS, s, side="left").astype(np.int32)


def near_threshold(log_sigma: np.ndarray, margin: float = PIN_MARGIN) -> np.ndarray:
    """Flat positions (int64, ascending) of the scales whose ln σ lies within ``margin``
    of a threshold between two indices: the ones an imprecise decoder could round the
    other way.

    >>> near_threshold(np.array([LOG_SCALE_BOUNDS[5] + 1e-9, 0.3]))
    array([0])
    """
    s = np.asarray(log_sigma, dtype=np.float64).reshape(-1)
    idx = np.searchsorted(LOG_SCALE_BOUNDS, s, side="left")
    below = LOG_SCALE_BOUNDS[np.clip(idx - 1, 0, len(LOG_SCALE_BOUNDS) - 1)]
    above = LOG_SCALE_BOUNDS[np.clip(idx, 0, len(LOG_SCALE_BOUNDS) - 1)]
    distance = np.minimum(np.abs(s - below), np.abs(s - above))
    return np.flatnonzero(~(distance >= margin))  # NaN counts as near


def _check_indices(indices: np.ndarray) -> np.ndarray:
    idx = np.asarray(indices)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"scale indices must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= SCALE_LEVELS):
        raise ValueError(
            f"scale indices must be in [0, {SCALE_LEVELS - 1}], "
            f"got range [{idx.min()}, {idx.max()}]"
        )
    return idx


_SQRT_PI = 1.7724538509055159
_SQRT_2 = 1.4142135623730951


def _exp_neg(y: np.ndarray) -> np.ndarray:
    """exp(-y) for 0 <= y <= 1600 by a Taylor series of exp(-y / 4096), squared 12 times."""
    r = y / 4096.0
    term = np.ones_like(r)
    total = np.ones_like(r)
    for n in range(1, 25):
        term = term * (-r) / n
        total = total + term
    for _ in range(12):
        total = total * total
    return total


def erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function for x >= 0 (absolute error below 1e-13), from
    +, −, × and ÷ alone, which IEEE 754 rounds the same on every machine (unlike libm's).

    >>> bool(abs(erfc(np.array([1.0]))[0] - 0.15729920705028513) < 1e-15)
    True
    """
    x = np.minimum(np.asarray(x, dtype=np.float64), 40.0)
    small = np.minimum(x, 3.0)  # Maclaurin series of erf, for x < 3
    term = small.copy()
    series = small.copy()
    for n in range(1, 61):
        term = term * (-small * small) / n
        series = series + term / (2 * n + 1)
    large = np.maximum(x, 3.0)  # continued fraction of erfc, for x >= 3
    fraction = large.copy()
    for n in range(60, 0, -1):
        fraction = large + (n / 2) / fraction
    tail = _exp_neg(large * large) / (_SQRT_PI * fraction)
    return np.where(x < 3.0, 1.0 - (2 / _SQRT_PI) * series, tail)


PROBABILITY_BITS = 24
"""Each table's integer frequencies sum to 2**24 (constriction's default ANS precision)."""


@functools.cache
def frequency_table(index: int) -> np.ndarray:
    """The integer frequencies (int64, summing to ``2**PROBABILITY_BITS``, each at least 1)
    of N(0, SCALE_TABLE[index]²) integrated over the unit bins of {-R, ..., R}, the tails
    beyond ±R folded into the escape symbols ±R."""
    edges = (np.arange(SUPPORT_RADIUS + 1) + 0.5) / (SCALE_TABLE[index] * _SQRT_2)
    upper = 0.5 * erfc(edges)  # P(k > j + ½) for j = 0 .. R
    half = np.concatenate([[1.0 - 2 * upper[0]], upper[:-2] - upper[1:-1], [upper[-2]]])
    probabilities = np.concatenate([half[:0:-1], half])
    total = 1 << PROBABILITY_BITS
    freq = np.maximum(1, np.floor(probabilities * total + 0.5)).astype(np.int64)
    freq[SUPPORT_RADIUS] += total - freq.sum()
    freq.setflags(write=False)
    return freq


@functools.cache
def _table_model(index: int) -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(frequency_table(index).astype(np.float64), perfect=False)


def _groups(idx: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The coding order (positions sorted by scale index, stably) and its runs
    (index, start, end) of equal index."""
    flat = idx.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=SCALE_LEVELS)
    ends = np.cumsum(counts)
    runs = [(int(s), int(ends[s] - counts[s]), int(ends[s])) for s in np.flatnonzero(counts)]
    return order, runs


def _bit_length(v: np.ndarray) -> np.ndarray:
    """floor(log2 v) for int64 v >= 1, exact (no floating point)."""
    nb = np.zeros(v.shape, dtype=np.int64)
    w = v.copy()
    for shift in (16, 8, 4, 2, 1):
        big = w >= (1 << shift)
        nb[big] += shift
        w[big] >>= shift
    return nb


def encode_symbols(symbols: np.ndarray, indices: np.ndarray) -> bytes:
    """Entropy-code integer residuals with the scales selected by ``indices``.

    ``symbols`` and ``indices`` must have the same shape.  Symbols with
    ``|k| >= 255`` are escape-coded; ``|k|`` may be at most ``MAX_ABS_SYMBOL``
    (about 2**24), otherwise ``ValueError`` is raised.  Returns the ANS words as
    little-endian bytes (``b""`` for an empty array).
    """
    sym = np.asarray(symbols)
    idx = _check_indices(indices)
    if not np.issubdtype(sym.dtype, np.integer):
        raise ValueError(f"symbols must be integers, got dtype {sym.dtype}")
    if sym.shape != idx.shape:
        raise ValueError(f"symbols shape {sym.shape} != indices shape {idx.shape}")
    if sym.size == 0:
        return b""
    # Range check on the original dtype (before any cast that could wrap).
    lo, hi = int(sym.min()), int(sym.max())
    if lo < -MAX_ABS_SYMBOL or hi > MAX_ABS_SYMBOL:
        bad = lo if lo < -MAX_ABS_SYMBOL else hi
        raise ValueError(
            f"symbol {bad} out of range: the escape code supports |k| <= {MAX_ABS_SYMBOL}"
        )
    k = sym.reshape(-1).astype(np.int64)
    absk = np.abs(k)
    R = SUPPORT_RADIUS
    main = np.clip(k, -R, R).astype(np.int32)

    flagged = absk >= R
    v = absk[flagged] - (R - 1)  # >= 1
    nb = _bit_length(v)
    has_raw = nb > 0
    raw = (v[has_raw] - (np.int64(1) << nb[has_raw])).astype(np.int32)
    raw_sizes = (np.int64(1) << nb[has_raw]).astype(np.int32)

    coder = constriction.stream.stack.AnsCoder()
    # ANS is a stack: push in reverse order of decoding.
    if raw.size:
        _guard(
            "encoding escape bits",
            lambda: coder.encode_reverse(raw, constriction.stream.model.Uniform(), raw_sizes),
            ValueError,
        )
    if nb.size:
        nb32 = nb.astype(np.int32)
        _guard(
            "encoding escape lengths",
            lambda: coder.encode_reverse(nb32, constriction.stream.model.Uniform(_NB_ALPHABET)),
            ValueError,
        )
    order, runs = _groups(idx)
    grouped = (main[order] + R).astype(np.int32)
    for index, start, end in reversed(runs):
        _guard(
            "encoding symbols",
            lambda: coder.encode_reverse(grouped[start:end], _table_model(index)),
            ValueError,
        )
    words = _guard("reading the compressed words", coder.get_compressed, ValueError)
    return np.asarray(words, dtype=np.uint32).astype("<u4").tobytes()


def decode_symbols(data: bytes, indices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: int32 symbols shaped like ``indices``.

    Raises :class:`bgcodec.errors.FormatError` if ``data`` is corrupt or does
    not match ``indices`` (and ``ValueError`` if ``indices`` itself is invalid).
    """
    idx = _check_indices(indices)
    if len(data) % 4:
        raise FormatError(
            f"latent stream is corrupt: length {len(data)} is not a multiple of 4"
        )
    if idx.size == 0:
        if len(data):
            raise FormatError("latent stream is corrupt: data for an empty latent")
        return np.zeros(idx.shape, dtype=np.int32)
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    R = SUPPORT_RADIUS

    coder = _guard(
        "opening the stream", lambda: constriction.stream.stack.AnsCoder(words), FormatError
    )
    order, runs = _groups(idx)
    k = np.empty(idx.size, dtype=np.int64)
    for index, start, end in runs:
        decoded = _guard(
            "decoding symbols", lambda: coder.decode(_table_model(index), end - start), FormatError
        )
        k[order[start:end]] = np.asarray(decoded, dtype=np.int64) - R

    flagged = np.flatnonzero(np.abs(k) >= R)
    if flagged.size:
        nb = _guard(
            "decoding escape lengths",
            lambda: coder.decode(constriction.stream.model.Uniform(_NB_ALPHABET), int(flagged.size)),
            FormatError,
        )
        nb = np.asarray(nb, dtype=np.int64)
        if nb.shape != flagged.shape or nb.min() < 0 or nb.max() > _MAX_NB:
            raise FormatError("latent stream is corrupt: escape length out of range")
        has_raw = nb > 0
        v = np.ones(flagged.size, dtype=np.int64) << nb
        if has_raw.any():
            sizes = (np.int64(1) << nb[has_raw]).astype(np.int32)
            raw = _guard(
                "decoding escape bits",
                lambda: coder.decode(constriction.stream.model.Uniform(), sizes),
                FormatError,
            )
            raw = np.asarray(raw, dtype=np.int64)
            if raw.shape != sizes.shape or raw.min() < 0 or np.any(raw >= sizes):
                raise FormatError("latent stream is corrupt: escape bits out of range")
            v[has_raw] += raw
        k[flagged] = np.sign(k[flagged]) * (v + (R - 1))

    if not _guard("finishing", coder.is_empty, FormatError):
        raise FormatError("latent stream is corrupt: data left over after the last symbol")
    return k.astype(np.int32).reshape(idx.shape)


def indices_checksum(indices: list[np.ndarray]) -> int:
    """CRC-32 over the scale indices of all latents, in order, one byte each.

    Stored in the file so that a decoder which rebuilt different probabilities
    (other torch build or CPU) fails loudly instead of decoding garbage.
    """
    crc = 0
    for idx in indices:
        a = _check_indices(idx)
        crc = zlib.crc32(np.ascontiguousarray(a.reshape(-1), dtype="<u1").tobytes(), crc)
    return crc & 0xFFFFFFFF
