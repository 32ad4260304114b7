"""ANS entropy coding of one latent tensor's integer residuals (DESIGN-NOTES §7).

Each symbol ``k = round(qm - pm)`` is coded with a zero-mean discretised
Gaussian whose standard deviation is ``SCALE_TABLE[idx]``.  The coder therefore
depends only on integer inputs (symbols and scale indices), never on raw network
floats (DESIGN-NOTES §8.3).

Stream layout (one ``constriction`` ANS stack per call, read in this order):

1. main symbols ``clip(k, -R, R)`` with ``QuantizedGaussian(-R, R)``;
2. for each escaped position (``|k| >= R``), in forward order, the Exp-Golomb
   prefix ``nb = floor(log2 v)`` of the excess ``v = |k| - R + 1`` with
   ``Uniform(32)``;
3. for each escaped position with ``nb > 0``, the remainder ``v - 2**nb`` with
   ``Uniform(2**nb)``.

This module imports neither torch nor anything outside numpy, constriction and
the standard library.
"""

from __future__ import annotations

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
    "encode_symbols",
    "decode_symbols",
    "indices_checksum",
]

SCALE_MIN = 0.11
SCALE_MAX = 20.0
SCALE_LEVELS = 64

SCALE_TABLE: np.ndarray = np.exp(
    np.linspace(np.log(SCALE_MIN), np.log(SCALE_MAX), SCALE_LEVELS, dtype=np.float64)
)
"""64 standard deviations log-spaced in [0.11, 20] (QARV / CompressAI table), float64."""
SCALE_TABLE.setflags(write=False)

_SCALE_TABLE_F32 = SCALE_TABLE.astype(np.float32)
_SCALE_TABLE_F32.setflags(write=False)

SUPPORT_RADIUS = 255
"""R: the Gaussian model's support is {-R, ..., R}; |k| >= R is an escape."""

_NB_ALPHABET = 32
"""Alphabet size of the Exp-Golomb prefix model (DESIGN-NOTES §7.4)."""

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


def scale_indices(sigma: np.ndarray) -> np.ndarray:
    """Index of the smallest table entry >= sigma (the scale is rounded up).

    The comparison is done in float32 so that encoder and decoder agree given
    identical float32 network outputs.  The result is clipped to [0, 63] and
    has dtype int32 and the shape of ``sigma``.
    """
    s = np.asarray(sigma).astype(np.float32)
    idx = np.searchsorted(_SCALE_TABLE_F32, s, side="left")
    return np.clip(idx, 0, SCALE_LEVELS - 1).astype(np.int32)


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


def _stds_for(idx: np.ndarray) -> np.ndarray:
    stds = np.ascontiguousarray(SCALE_TABLE[idx.reshape(-1)], dtype=np.float64)
    if stds.size and not (np.all(np.isfinite(stds)) and stds.min() > 0):
        raise ValueError("scale table produced a non-positive or non-finite std")
    return stds


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
    stds = _stds_for(idx)
    means = np.zeros_like(stds)
    R = SUPPORT_RADIUS
    main = np.clip(k, -R, R).astype(np.int32)

    flagged = absk >= R
    v = absk[flagged] - (R - 1)  # >= 1
    nb = _bit_length(v)
    has_raw = nb > 0
    raw = (v[has_raw] - (np.int64(1) << nb[has_raw])).astype(np.int32)
    raw_sizes = (np.int64(1) << nb[has_raw]).astype(np.int32)

    coder = constriction.stream.stack.AnsCoder()
    family = constriction.stream.model.QuantizedGaussian(-R, R)
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
    _guard(
        "encoding symbols",
        lambda: coder.encode_reverse(main, family, means, stds),
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
    stds = _stds_for(idx)
    means = np.zeros_like(stds)
    R = SUPPORT_RADIUS

    coder = _guard(
        "opening the stream", lambda: constriction.stream.stack.AnsCoder(words), FormatError
    )
    family = constriction.stream.model.QuantizedGaussian(-R, R)
    main = _guard("decoding symbols", lambda: coder.decode(family, means, stds), FormatError)
    k = np.asarray(main, dtype=np.int64)
    if k.shape != (idx.size,):
        raise FormatError("latent stream is corrupt: wrong number of decoded symbols")

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
