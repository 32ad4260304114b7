"""Image-quality metrics of 8-bit RGB images: PSNR and MS-SSIM (numpy only)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW = 11
MS_SSIM_SIGMA = 1.5
MS_SSIM_MIN_SIZE = (MS_SSIM_WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
"""161: the smallest side for which the coarsest of the 5 scales still holds one 11×11 window."""
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two 8-bit RGB images (MSE over all pixels and channels); inf if identical."""
    a, b = _check_pair(original, decoded)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim(original: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM of two 8-bit RGB images (see :class:`MSSSIM`); 1.0 for identical images."""
    a, b = _check_pair(original, decoded)
    return MSSSIM(a)(b)


def ms_ssim_db(value: float | None) -> float:
    """MS-SSIM in dB, −10·log10(1 − value); inf for 1.0, nan for a missing value."""
    if value is None or not math.isfinite(value):
        return math.nan
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


class _Scale(NamedTuple):
    """One scale of the reference image (channels first, float64) with its local statistics."""

    image: np.ndarray
    mean: np.ndarray
    variance: np.ndarray


class MSSSIM:
    """MS-SSIM against one reference image, with the reference's statistics computed once.

    Wang, Simoncelli & Bovik (2003): 5 scales with the weights (0.0448, 0.2856, 0.3001,
    0.2363, 0.1333), an 11×11 Gaussian window with σ = 1.5 ('valid' filtering), K1 = 0.01,
    K2 = 0.03, L = 255, 2×2 mean downsampling between scales. Computed per RGB channel on
    [0, 255] and averaged over the channels; negative contrast-structure terms are clipped
    to 0 before the weighted product.

    Images with a side shorter than 161 px (too small for 5 scales) are mirror-padded
    (``numpy.pad(mode="symmetric")``, reference and decoded image alike) to 161 px;
    ``padded`` says so. The padding repeats image content, so such values are only roughly
    comparable with values for large images.
    """

    def __init__(self, reference: np.ndarray):
        reference = np.asarray(reference)
        if reference.ndim != 3 or reference.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image, got shape {reference.shape}")
        self.shape = reference.shape
        padded = _pad_for_ms_ssim(reference)
        self.padded = padded.shape != reference.shape
        x = _channels_first(padded)
        self._scales: list[_Scale] = []
        for level in range(len(MS_SSIM_WEIGHTS)):
            if level:
                x = _downsample(x)
            mean = _gaussian_filter(x)
            self._scales.append(_Scale(x, mean, _gaussian_filter(x * x) - mean * mean))

    def __call__(self, decoded: np.ndarray) -> float:
        decoded = np.asarray(decoded)
        if decoded.shape != self.shape:
            raise ValueError(f"expected an image of shape {self.shape}, got {decoded.shape}")
        y = _channels_first(_pad_for_ms_ssim(decoded))
        coarsest = len(MS_SSIM_WEIGHTS) - 1
        per_channel = np.ones(3)
        for level, (reference, weight) in enumerate(zip(self._scales, MS_SSIM_WEIGHTS)):
            if level:
                y = _downsample(y)
            term = _similarity(reference, y, with_luminance=level == coarsest)
            per_channel *= np.maximum(term, 0.0) ** weight
        return float(np.mean(per_channel))


def _similarity(reference: _Scale, y: np.ndarray, with_luminance: bool) -> np.ndarray:
    """Per channel, the mean contrast-structure term at one scale (times luminance if asked)."""
    mean_y = _gaussian_filter(y)
    variance_y = _gaussian_filter(y * y) - mean_y * mean_y
    covariance = _gaussian_filter(reference.image * y) - reference.mean * mean_y
    similarity = (2 * covariance + _C2) / (reference.variance + variance_y + _C2)
    if with_luminance:
        mean_x = reference.mean
        luminance = (2 * mean_x * mean_y + _C1) / (mean_x * mean_x + mean_y * mean_y + _C1)
        similarity = luminance * similarity
    return np.mean(similarity, axis=(1, 2))


def _check_pair(original: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(original), np.asarray(decoded)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape != b.shape:
        raise ValueError(f"expected two HxWx3 images of the same size, got {a.shape} and {b.shape}")
    return a, b


def _channels_first(image: np.ndarray) -> np.ndarray:
    return image.transpose(2, 0, 1).astype(np.float64)


def _pad_for_ms_ssim(image: np.ndarray) -> np.ndarray:
    """Mirror-pad (symmetric) an HxWx3 image so that both sides are at least MS_SSIM_MIN_SIZE."""
    h, w = image.shape[:2]
    ph, pw = max(0, MS_SSIM_MIN_SIZE - h), max(0, MS_SSIM_MIN_SIZE - w)
    if not ph and not pw:
        return image
    return np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="symmetric")


def _gaussian_window() -> np.ndarray:
    t = np.arange(MS_SSIM_WINDOW, dtype=np.float64) - (MS_SSIM_WINDOW - 1) / 2
    g = np.exp(-(t**2) / (2 * MS_SSIM_SIGMA**2))
    return g / g.sum()


_GAUSSIAN_WINDOW = _gaussian_window()


def _gaussian_filter(a: np.ndarray) -> np.ndarray:
    """'valid' separable Gaussian filtering over the last two axes (float64)."""
    n = MS_SSIM_WINDOW
    rows = a.shape[-2] - n + 1
    cols = a.shape[-1] - n + 1
    out = _GAUSSIAN_WINDOW[0] * a[..., 0:rows, :]
    for k in range(1, n):
        out += _GAUSSIAN_WINDOW[k] * a[..., k : k + rows, :]
    res = _GAUSSIAN_WINDOW[0] * out[..., :, 0:cols]
    for k in range(1, n):
        res += _GAUSSIAN_WINDOW[k] * out[..., :, k : k + cols]
    return res


def _downsample(a: np.ndarray) -> np.ndarray:
    """2×2 mean, halving each side (rounding up: an odd last row/column is repeated)."""
    if a.shape[-2] % 2:
        a = np.concatenate([a, a[..., -1:, :]], axis=-2)
    if a.shape[-1] % 2:
        a = np.concatenate([a, a[..., :, -1:]], axis=-1)
    return 0.25 * (a[..., 0::2, 0::2] + a[..., 1::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 1::2])
