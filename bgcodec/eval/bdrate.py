"""Bjøntegaard deltas: BD-rate and BD-quality (BD-PSNR) between two rate-distortion curves.

Two curves, an *anchor* and a *test*, each a list of (rate, quality) points (rate in bpp,
quality in dB: PSNR or MS-SSIM in dB). Over the quality range both curves cover, log-rate
is interpolated as a function of quality for each curve and integrated; the mean
difference of the log-rates gives the average rate ratio:

    BD-rate = (exp(mean(ln R_test − ln R_anchor)) − 1) · 100 %

(negative: the test curve needs fewer bits for the same quality). BD-quality swaps the
axes: quality as a function of log-rate over the common log-rate range, mean difference
in dB (positive: the test curve is better at the same rate).

Two interpolations:

* ``"pchip"`` (default): piecewise cubic Hermite interpolation with the shape-preserving
  (Fritsch–Carlson) slopes, as in the current JVET/AOM common test conditions. It passes
  through every point and needs only two of them.
* ``"cubic"``: one least-squares cubic polynomial per curve (the original VCEG-M33
  method); it needs at least four points.

Both integrals are computed exactly (piecewise polynomials). The natural logarithm is
used throughout; the result does not depend on the base.

numpy only; no scipy.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

METHODS = ("pchip", "cubic")


class BDError(ValueError):
    """The delta cannot be computed (too few points, or curves that do not overlap)."""


def _curve(xs: Sequence[float], ys: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by x; points with the same x are merged (mean of their y)."""
    x = np.asarray(xs, dtype=np.float64).ravel()
    y = np.asarray(ys, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{what}: {x.size} x values but {y.size} y values")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        raise BDError(f"{what}: no finite points")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    unique, start = np.unique(x, return_index=True)
    if unique.size != x.size:
        y = np.add.reduceat(y, start) / np.diff(np.append(start, x.size))
        x = unique
    return x, y


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives at the knots for shape-preserving piecewise cubic Hermite interpolation.

    Interior knots: 0 where the neighbouring secants change sign (or one is 0), else a
    weighted harmonic mean of the two secants (Fritsch & Carlson 1980, with the
    Fritsch–Butland weights). End knots: a one-sided three-point estimate, limited so that
    the interpolant keeps the data's shape. Two knots: the straight line.
    """
    h = np.diff(x)
    delta = np.diff(y) / h
    n = x.size
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    for k in range(1, n - 1):
        a, b = delta[k - 1], delta[k]
        if a == 0 or b == 0 or np.sign(a) != np.sign(b):
            d[k] = 0.0
        else:
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / a + w2 / b)
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, delta0: float, delta1: float) -> float:
    slope = ((2 * h0 + h1) * delta0 - h0 * delta1) / (h0 + h1)
    if np.sign(slope) != np.sign(delta0):
        return 0.0
    if np.sign(delta0) != np.sign(delta1) and abs(slope) > abs(3 * delta0):
        return 3 * delta0
    return slope


def pchip_integral(x: Sequence[float], y: Sequence[float], lo: float, hi: float) -> float:
    """∫ from lo to hi of the PCHIP interpolant through (x, y); lo, hi within [x[0], x[-1]].

    ``x`` must be strictly increasing.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.any(np.diff(x) <= 0):
        raise ValueError("pchip_integral needs at least 2 strictly increasing x values")
    if not (x[0] <= lo <= hi <= x[-1]):
        raise ValueError(f"integration range [{lo}, {hi}] is outside the data [{x[0]}, {x[-1]}]")
    d = pchip_slopes(x, y)
    total = 0.0
    for k in range(x.size - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        secant = (y[k + 1] - y[k]) / h
        # y(t) = y_k + d_k t + c2 t² + c3 t³ with t = x − x_k
        c2 = (3 * secant - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * secant) / h**2

        def antiderivative(t: float) -> float:
            return t * (y[k] + t * (d[k] / 2 + t * (c2 / 3 + t * c3 / 4)))

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return float(total)


def _cubic_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    # centre and scale x for a well-conditioned fit; the integral is scaled back
    centre, scale = (x[0] + x[-1]) / 2, (x[-1] - x[0]) / 2
    coeffs = np.polyfit((x - centre) / scale, y, 3)
    primitive = np.polyint(coeffs)
    return float((np.polyval(primitive, (hi - centre) / scale) - np.polyval(primitive, (lo - centre) / scale)) * scale)


def _mean_difference(anchor: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                     method: str, axis: str) -> float:
    """Mean of (test − anchor) of the interpolated y over the common x range."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (use one of {', '.join(METHODS)})")
    need = 2 if method == "pchip" else 4
    for name, (x, _) in (("anchor", anchor), ("test", test)):
        if x.size < need:
            raise BDError(f"the {name} curve has {x.size} distinct {axis} value(s); "
                          f"{method} needs at least {need}")
    lo = max(anchor[0][0], test[0][0])
    hi = min(anchor[0][-1], test[0][-1])
    if not hi > lo:
        raise BDError(f"the curves do not overlap in {axis} (anchor {anchor[0][0]:.4g} to {anchor[0][-1]:.4g}, "
                      f"test {test[0][0]:.4g} to {test[0][-1]:.4g})")
    integrate = pchip_integral if method == "pchip" else _cubic_integral
    return (integrate(*test, lo, hi) - integrate(*anchor, lo, hi)) / (hi - lo)


def bd_rate(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
            test_rate: Sequence[float], test_quality: Sequence[float], method: str = "pchip") -> float:
    """BD-rate of the test curve against the anchor, in percent (negative = test saves bits).

    Raises BDError when the curves have too few points or do not overlap in quality.
    """
    anchor = _curve(anchor_quality, _log_rate(anchor_rate), "anchor")
    test = _curve(test_quality, _log_rate(test_rate), "test")
    return float((np.exp(_mean_difference(anchor, test, method, "quality")) - 1) * 100)


def bd_quality(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
               test_rate: Sequence[float], test_quality: Sequence[float], method: str = "pchip") -> float:
    """BD-quality (BD-PSNR for PSNR) of the test curve against the anchor, in the quality's unit.

    Positive: the test curve has the higher quality at the same rate. Raises BDError when the
    curves have too few points or do not overlap in rate.
    """
    anchor = _curve(_log_rate(anchor_rate), anchor_quality, "anchor")
    test = _curve(_log_rate(test_rate), test_quality, "test")
    return float(_mean_difference(anchor, test, method, "rate"))


bd_psnr = bd_quality


def _log_rate(rate: Sequence[float]) -> np.ndarray:
    r = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, np.log(np.where(r > 0, r, 1.0)), np.nan)


class BDColumn(NamedTuple):
    key: str
    title: str
    metric: str
    kind: str  # "rate": BD-rate in %, "quality": BD-quality in dB
    unit: str


BD_COLUMNS = (
    BDColumn("bd_rate_psnr", "BD-rate PSNR", "psnr", "rate", "%"),
    BDColumn("bd_psnr", "BD-PSNR", "psnr", "quality", "dB"),
    BDColumn("bd_rate_msssim", "BD-rate MS-SSIM", "ms_ssim_db", "rate", "%"),
    BDColumn("bd_msssim_db", "BD-MS-SSIM", "ms_ssim_db", "quality", "dB"),
)
