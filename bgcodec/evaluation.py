"""Rate-distortion evaluation of bgcodec against the classic image codecs (``bgcodec eval``).

For every image of a dataset folder and every setting of every codec: encode to real
bytes, decode, and measure bpp (8·bytes / pixels, whole file), PSNR and MS-SSIM on 8-bit
RGB, and the encode / decode times. bgcodec goes through exactly the ``encode`` /
``decode`` code path (``Codec.encode`` → .bgv bytes → ``Codec.decode``).

Outputs (in the --out folder): ``results.json`` (everything), one CSV per codec (one row
per image and setting), ``summary.md`` (mean table and Bjøntegaard deltas) and the RD
plots ``rd_psnr.png`` and ``rd_msssim.png``.

The metrics are numpy only. The codecs beyond Pillow (JPEG XL and JPEG 2000 via
``imagecodecs``) and the plots (``matplotlib``) are optional: ``pip install 'bgcodec[eval]'``;
a codec or plot that is unavailable is skipped with a note.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bgcodec.errors import BgcodecError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".webp")
BGCODEC = "bgcodec"
CLASSIC_CODECS = ("jpeg", "jpeg444", "webp", "avif", "jxl", "jpeg2000")
DEFAULT_NUM_LAMBDAS = 8
RESULTS_FORMAT = "bgcodec-eval-1"

# --------------------------------------------------------------------------
# metrics


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two 8-bit RGB images (MSE over all pixels and channels); inf if identical."""
    a, b = _pair(original, decoded)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW = 11
MS_SSIM_SIGMA = 1.5
MS_SSIM_MIN_SIZE = (MS_SSIM_WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
"""161: the smallest side for which the coarsest of the 5 scales still holds one 11×11 window."""
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _gaussian_window() -> np.ndarray:
    t = np.arange(MS_SSIM_WINDOW, dtype=np.float64) - (MS_SSIM_WINDOW - 1) / 2
    g = np.exp(-(t**2) / (2 * MS_SSIM_SIGMA**2))
    return g / g.sum()


_WINDOW = _gaussian_window()


def _filter(a: np.ndarray) -> np.ndarray:
    """'valid' separable Gaussian filtering over the last two axes (float64)."""
    n = MS_SSIM_WINDOW
    rows = a.shape[-2] - n + 1
    cols = a.shape[-1] - n + 1
    out = _WINDOW[0] * a[..., 0:rows, :]
    for k in range(1, n):
        out += _WINDOW[k] * a[..., k : k + rows, :]
    res = _WINDOW[0] * out[..., :, 0:cols]
    for k in range(1, n):
        res += _WINDOW[k] * out[..., :, k : k + cols]
    return res


def _downsample(a: np.ndarray) -> np.ndarray:
    """2×2 mean, halving each side (rounding up: an odd last row/column is repeated)."""
    if a.shape[-2] % 2:
        a = np.concatenate([a, a[..., -1:, :]], axis=-2)
    if a.shape[-1] % 2:
        a = np.concatenate([a, a[..., :, -1:]], axis=-1)
    return 0.25 * (a[..., 0::2, 0::2] + a[..., 1::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 1::2])


def _pair(original: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(original), np.asarray(decoded)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape != b.shape:
        raise ValueError(f"expected two HxWx3 images of the same size, got {a.shape} and {b.shape}")
    return a, b


def _pad_for_ms_ssim(image: np.ndarray) -> np.ndarray:
    """Mirror-pad (symmetric) an HxWx3 image so that both sides are at least MS_SSIM_MIN_SIZE."""
    h, w = image.shape[:2]
    ph, pw = max(0, MS_SSIM_MIN_SIZE - h), max(0, MS_SSIM_MIN_SIZE - w)
    if not ph and not pw:
        return image
    return np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="symmetric")


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
        x = padded.transpose(2, 0, 1).astype(np.float64)
        self._scales = []
        for level in range(len(MS_SSIM_WEIGHTS)):
            if level:
                x = _downsample(x)
            mu = _filter(x)
            self._scales.append((x, mu, _filter(x * x) - mu * mu))

    def __call__(self, decoded: np.ndarray) -> float:
        decoded = np.asarray(decoded)
        if decoded.shape != self.shape:
            raise ValueError(f"expected an image of shape {self.shape}, got {decoded.shape}")
        y = _pad_for_ms_ssim(decoded).transpose(2, 0, 1).astype(np.float64)
        last = len(MS_SSIM_WEIGHTS) - 1
        result = np.ones(3)
        for level, (x, mu_x, var_x) in enumerate(self._scales):
            if level:
                y = _downsample(y)
            mu_y = _filter(y)
            var_y = _filter(y * y) - mu_y * mu_y
            cov = _filter(x * y) - mu_x * mu_y
            cs_map = (2 * cov + _C2) / (var_x + var_y + _C2)
            if level == last:
                lum = (2 * mu_x * mu_y + _C1) / (mu_x * mu_x + mu_y * mu_y + _C1)
                value = np.mean(lum * cs_map, axis=(1, 2))
            else:
                value = np.mean(cs_map, axis=(1, 2))
            result *= np.maximum(value, 0.0) ** MS_SSIM_WEIGHTS[level]
        return float(np.mean(result))


def ms_ssim(original: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM of two 8-bit RGB images (see :class:`MSSSIM`); 1.0 for identical images."""
    a, b = _pair(original, decoded)
    return MSSSIM(a)(b)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB, −10·log10(1 − value); inf for 1.0."""
    if value is None or not math.isfinite(value):
        return math.nan
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


# --------------------------------------------------------------------------
# codecs


class CodecUnavailable(Exception):
    """The codec cannot run here; the message says why (shown as a note)."""


class EvalCodec:
    """One codec with the settings it is swept over."""

    name: str = ""
    title: str = ""
    param: str = ""
    values: Sequence[float] = ()
    larger_is_better: bool = True
    """Whether a larger setting value means more bits and a higher quality."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def prepare(self) -> None:
        """Raise CodecUnavailable when the codec cannot run here."""

    def label(self, value: float) -> str:
        return f"{self.param}={value:g}"

    def encode(self, image: np.ndarray, value: float) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"title": self.title, "param": self.param, "values": list(self.values), "notes": list(self.notes)}


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)


class PillowCodec(EvalCodec):
    fmt = ""
    feature = ""
    options: dict = {}

    def prepare(self) -> None:
        from PIL import Image, features

        Image.init()
        if self.fmt not in Image.SAVE or (self.feature and not features.check(self.feature)):
            raise CodecUnavailable(f"this Pillow build cannot write {self.fmt}")
        # one tiny round trip, so that a broken codec fails here and not at every point
        self.decode(self.encode(np.zeros((16, 16, 3), np.uint8), self.values[len(self.values) // 2]))

    def save_options(self, value: float) -> dict:
        return {**self.options, "quality": int(value)}

    def encode(self, image: np.ndarray, value: float) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=self.fmt, **self.save_options(value))
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data)

    def describe(self) -> dict:
        from PIL import features

        info = super().describe()
        library = {"jpg": "libjpeg", "webp": "libwebp", "avif": "libavif"}.get(self.feature, self.feature)
        version = features.version(self.feature) if self.feature else None
        if self.feature == "jpg" and features.check_feature("libjpeg_turbo"):
            library, version = "libjpeg-turbo", features.version_feature("libjpeg_turbo")
        info["library"] = f"Pillow {_version('PIL')}" + (f", {library} {version}" if library else "")
        info["options"] = {k: v for k, v in self.options.items()}
        return info


class JpegCodec(PillowCodec):
    name, title, param = "jpeg", "JPEG 4:2:0", "q"
    fmt, feature = "JPEG", "jpg"
    options = {"subsampling": 2, "optimize": True}
    values = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90)


class Jpeg444Codec(JpegCodec):
    name, title = "jpeg444", "JPEG 4:4:4"
    options = {"subsampling": 0, "optimize": True}


class WebpCodec(PillowCodec):
    name, title, param = "webp", "WebP", "q"
    fmt, feature = "WEBP", "webp"
    options = {"method": 6}
    values = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)


class AvifCodec(PillowCodec):
    name, title, param = "avif", "AVIF 4:4:4", "q"
    fmt, feature = "AVIF", "avif"
    options = {"subsampling": "4:4:4", "speed": 6, "advanced": {"tune": "psnr"}}
    values = (5, 10, 20, 30, 40, 50, 60, 70, 80, 85)

    def prepare(self) -> None:
        self.options = dict(type(self).options)
        try:
            super().prepare()
        except CodecUnavailable:
            raise
        except Exception as exc:  # e.g. an encoder without the codec-specific option 'tune'
            if "advanced" not in self.options:
                raise
            del self.options["advanced"]
            super().prepare()
            self.notes.append(f"this libavif encoder refused tune=psnr ({_one_line(exc)}); default tuning used")
        else:
            self.notes.append("Pillow's AVIF plugin has no tuning option of its own; tune=psnr is passed "
                              "to the encoder as a codec-specific option (advanced={'tune': 'psnr'})")

    def describe(self) -> dict:
        info = super().describe()
        try:
            from PIL import _avif

            info["encoder"] = [c for c in ("aom", "rav1e", "svt") if _avif.encoder_codec_available(c)]
        except Exception:
            pass
        return info


class JxlCodec(EvalCodec):
    name, title, param = "jxl", "JPEG XL (effort 7)", "d"
    larger_is_better = False
    values = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 14.0, 20.0)

    def prepare(self) -> None:
        try:
            import imagecodecs
        except ImportError:
            raise CodecUnavailable("needs the imagecodecs package (pip install 'bgcodec[eval]')") from None
        if not getattr(getattr(imagecodecs, "JPEGXL", None), "available", False):
            raise CodecUnavailable("this imagecodecs build has no JPEG XL codec")
        self._ic = imagecodecs
        self.decode(self.encode(np.zeros((16, 16, 3), np.uint8), 1.0))

    def encode(self, image: np.ndarray, value: float) -> bytes:
        return bytes(self._ic.jpegxl_encode(image, effort=7, distance=float(value)))

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._ic.jpegxl_decode(data), dtype=np.uint8)

    def describe(self) -> dict:
        info = super().describe()
        info["library"] = f"imagecodecs {_version('imagecodecs')}, {_call(getattr(self, '_ic', None), 'jpegxl_version')}"
        info["options"] = {"effort": 7, "distance": "d (Butteraugli distance; smaller = better)"}
        return info


class Jpeg2000Codec(EvalCodec):
    name, title, param = "jpeg2000", "JPEG 2000 (OpenJPEG)", "psnr"
    values = (24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44)

    def prepare(self) -> None:
        try:
            import imagecodecs
        except ImportError:
            raise CodecUnavailable("needs the imagecodecs package (pip install 'bgcodec[eval]')") from None
        if not getattr(getattr(imagecodecs, "JPEG2K", None), "available", False):
            raise CodecUnavailable("this imagecodecs build has no JPEG 2000 codec")
        self._ic = imagecodecs
        self.decode(self.encode(np.zeros((16, 16, 3), np.uint8), 30))
        self.notes.append("the setting is OpenJPEG's fixed-quality target (imagecodecs level = target PSNR "
                          "in dB, one quality layer); imagecodecs defaults otherwise")

    def encode(self, image: np.ndarray, value: float) -> bytes:
        return bytes(self._ic.jpeg2k_encode(image, level=int(value)))

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._ic.jpeg2k_decode(data), dtype=np.uint8)

    def describe(self) -> dict:
        info = super().describe()
        info["library"] = f"imagecodecs {_version('imagecodecs')}, {_call(getattr(self, '_ic', None), 'jpeg2k_version')}"
        return info


CODEC_CLASSES: dict[str, type[EvalCodec]] = {
    c.name: c for c in (JpegCodec, Jpeg444Codec, WebpCodec, AvifCodec, JxlCodec, Jpeg2000Codec)
}


class BgcodecCodec(EvalCodec):
    """bgcodec through the same calls as ``bgcodec encode`` / ``bgcodec decode``."""

    name, title, param = BGCODEC, "bgcodec", "lambda"

    def __init__(self, codec: Any, lambdas: Sequence[float], weights_label: str):
        super().__init__()
        self.codec = codec
        self.values = tuple(lambdas)
        self.title = f"bgcodec ({weights_label})"

    def label(self, value: float) -> str:
        return f"lambda={value:.4g}"

    def encode(self, image: np.ndarray, value: float) -> bytes:
        return self.codec.encode(image, value)

    def decode(self, data: bytes) -> np.ndarray:
        return self.codec.decode(data)


# --------------------------------------------------------------------------
# running


@dataclass
class EvalOptions:
    dataset: str
    out: str
    lambdas: Sequence[float] | None = None
    codecs: Sequence[str] = CLASSIC_CODECS
    weights: str | None = None
    device: str = "auto"
    limit: int | None = None
    bd_method: str = "pchip"
    anchors: str | None = None
    command: Sequence[str] = field(default_factory=list)


@dataclass
class Point:
    codec: str
    setting: str
    value: float


ROW_FIELDS = ("codec", "setting", "param", "value", "image", "width", "height", "bytes", "bpp",
              "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s")
MEAN_FIELDS = ("codec", "setting", "param", "value", "images", "bpp", "psnr", "ms_ssim", "ms_ssim_db",
               "encode_s", "decode_s")


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; the first ``limit``."""
    path = Path(folder)
    if not path.is_dir():
        raise BgcodecError(f"{folder}: not a directory")
    images = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: p.name)
    if not images:
        raise BgcodecError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images[:limit] if limit is not None else images


def output_names(codecs: Sequence[str]) -> list[str]:
    return ["results.json", "summary.md", "rd_psnr.png", "rd_msssim.png"] + [
        f"{name}.csv" for name in (BGCODEC, *codecs)]


def default_lambdas(lambda_range: tuple[float, float], n: int = DEFAULT_NUM_LAMBDAS) -> list[float]:
    lo, hi = lambda_range
    return [float(v) for v in np.geomspace(lo, hi, n)]


def is_random_weights(spec: str) -> bool:
    return spec.startswith("random:")


def run(options: EvalOptions, *, progress: Callable[[int, str], None] | None = None,
        note: Callable[[str], None] | None = None) -> dict:
    """Run the whole evaluation and write the outputs; returns the results dict.

    ``progress(total, "")`` is called once with the number of steps, then
    ``progress(0, label)`` before and ``progress(1, label)`` after each (image, setting).
    ``note(message)`` receives notes as they arise. Raises BgcodecError for fatal problems
    (no images, weights that cannot be loaded, λ out of range).
    """
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    notes: list[str] = []

    def add_note(message: str) -> None:
        notes.append(message)
        if note is not None:
            note(message)

    images = list_images(options.dataset, options.limit)

    from bgcodec.codec import Codec
    from bgcodec.imageio import load_image
    from bgcodec.weights import resolve

    weights_spec = resolve(options.weights)
    codec = Codec.load(options.weights, device=options.device)
    random_weights = is_random_weights(weights_spec)
    weights_label = weights_spec + (" (random-init weights, not trained)" if random_weights else "")
    if options.lambdas:
        lambdas = [float(v) for v in options.lambdas]
        for lmbda in lambdas:
            codec.check_lambda(lmbda)
    else:
        lambdas = default_lambdas(codec.lambda_range)

    codecs: list[EvalCodec] = [BgcodecCodec(codec, lambdas, weights_spec)]
    skipped: dict[str, str] = {}
    for name in options.codecs:
        candidate = CODEC_CLASSES[name]()
        try:
            candidate.prepare()
        except CodecUnavailable as exc:
            skipped[name] = str(exc)
            add_note(f"{name}: skipped: {exc}")
            continue
        except Exception as exc:
            skipped[name] = f"does not work here ({type(exc).__name__}: {_one_line(exc)})"
            add_note(f"{name}: skipped: {skipped[name]}")
            continue
        for message in candidate.notes:
            add_note(f"{name}: {message}")
        codecs.append(candidate)

    total = len(images) * sum(len(c.values) for c in codecs)
    if progress is not None:
        progress(total, "")

    rows: list[dict] = []
    errors: list[dict] = []
    image_info: list[dict] = []
    ms_ssim_padded: list[str] = []
    for path in images:
        try:
            image, image_notes = load_image(str(path), drop_alpha=True)
        except BgcodecError as exc:
            errors.append({"image": path.name, "codec": None, "setting": None, "error": _one_line(exc)})
            add_note(f"{path.name}: skipped: {_one_line(exc)}")
            if progress is not None:
                for c in codecs:
                    for value in c.values:
                        progress(1, f"{path.name} {c.name} {c.label(value)}")
            continue
        for message in image_notes:
            add_note(f"{path.name}: {message}")
        height, width = image.shape[:2]
        image_info.append({"name": path.name, "width": width, "height": height})
        if not image_info[:-1]:
            # one untimed bgcodec round trip, so that the first timed point does not pay for warm-up
            try:
                codec.decode(codec.encode(np.ascontiguousarray(image[:64, :64]), lambdas[0]))
            except Exception:
                pass  # a real problem shows up (and is recorded) at the timed points
        reference = MSSSIM(image)
        if reference.padded:
            ms_ssim_padded.append(path.name)
        for c in codecs:
            for value in c.values:
                label = c.label(value)
                if progress is not None:
                    progress(0, f"{path.name} {c.name} {label}")
                try:
                    t0 = time.perf_counter()
                    data = c.encode(image, value)
                    t1 = time.perf_counter()
                    decoded = c.decode(data)
                    t2 = time.perf_counter()
                    if decoded.shape != image.shape or decoded.dtype != np.uint8:
                        raise BgcodecError(f"decoded to {decoded.dtype} {decoded.shape}, expected uint8 {image.shape}")
                    quality = reference(decoded)
                    rows.append({
                        "codec": c.name, "setting": label, "param": c.param, "value": float(value),
                        "image": path.name, "width": width, "height": height, "bytes": len(data),
                        "bpp": 8 * len(data) / (width * height), "psnr": psnr(image, decoded),
                        "ms_ssim": quality, "ms_ssim_db": ms_ssim_db(quality),
                        "encode_s": t1 - t0, "decode_s": t2 - t1,
                    })
                except Exception as exc:
                    message = _one_line(exc) if isinstance(exc, BgcodecError) else f"{type(exc).__name__}: {_one_line(exc)}"
                    errors.append({"image": path.name, "codec": c.name, "setting": label, "error": message})
                finally:
                    if progress is not None:
                        progress(1, f"{path.name} {c.name} {label}")
    if ms_ssim_padded:
        add_note(f"MS-SSIM: {len(ms_ssim_padded)} image(s) have a side below {MS_SSIM_MIN_SIZE} px, too small for "
                 f"5 scales; they were mirror-padded to {MS_SSIM_MIN_SIZE} px before MS-SSIM "
                 f"({', '.join(ms_ssim_padded[:5])}{', ...' if len(ms_ssim_padded) > 5 else ''})")
    for err in errors[:20]:
        if err["codec"]:
            add_note(f"error: {err['image']} {err['codec']} {err['setting']}: {err['error']}")
    if len(errors) > 20:
        add_note(f"... and {len(errors) - 20} more errors (see results.json)")

    loaded = [info["name"] for info in image_info]
    means = aggregate(rows, codecs, loaded, add_note)
    bd = bd_table(means, [c.name for c in codecs[1:]], options.bd_method)
    wall = time.perf_counter() - started

    results = {
        "format": RESULTS_FORMAT,
        "created": started_at.isoformat(timespec="seconds"),
        "command": list(options.command),
        "dataset": {"path": os.path.abspath(options.dataset), "name": dataset_name(options.dataset),
                    "limit": options.limit, "images": image_info},
        "weights": {"spec": weights_spec, "random_init": random_weights, "label": weights_label,
                    "identity": codec.identity.hex(), "lambda_range": list(codec.lambda_range),
                    "metadata": dict(codec.metadata)},
        "settings": {
            "lambdas": lambdas, "codecs": [c.name for c in codecs], "skipped": skipped,
            "bd_method": options.bd_method, "device": str(codec.device),
            "codec_settings": {c.name: c.describe() for c in codecs},
            "metrics": {
                "bpp": "8 * file bytes / (width * height), whole file incl. headers",
                "psnr": "10 log10(255^2 / MSE) over 8-bit RGB (all pixels and channels); mean = mean of per-image PSNR",
                "ms_ssim": "5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), Gaussian window 11, sigma 1.5, "
                           "on [0, 255] RGB per channel, averaged over channels; mean = mean over images",
                "ms_ssim_db": "-10 log10(1 - ms_ssim); in the means: of the mean MS-SSIM",
                "encode_s/decode_s": "wall time of one encode / decode call (bytes in memory, no file I/O); "
                                     "bgcodec after one untimed warm-up",
            },
        },
        "means": means,
        "bd": bd,
        "notes": notes,
        "errors": errors,
        "versions": versions(),
        "machine": machine(codec.device),
        "wall_s": wall,
        "rows": rows,
    }
    write_outputs(results, options, [c.name for c in codecs], add_note)
    results["wall_s"] = time.perf_counter() - started
    return results


def dataset_name(path: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(path))) or "dataset"


def aggregate(rows: list[dict], codecs: Sequence[EvalCodec], images: Sequence[str],
              add_note: Callable[[str], None]) -> dict[str, list[dict]]:
    """Mean over images per codec and setting. A setting that failed on some image is kept
    in the table (``complete`` false) but left out of the curves and BD deltas."""
    means: dict[str, list[dict]] = {}
    for c in codecs:
        entries = []
        for value in c.values:
            label = c.label(value)
            subset = [r for r in rows if r["codec"] == c.name and r["setting"] == label]
            entry: dict[str, Any] = {"codec": c.name, "setting": label, "param": c.param, "value": float(value),
                                     "images": len(subset), "complete": len(subset) == len(images) > 0}
            if subset:
                for key in ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s"):
                    entry[key] = float(np.mean([r[key] for r in subset]))
                entry["ms_ssim_db"] = ms_ssim_db(entry["ms_ssim"])
            else:
                for key in ("bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"):
                    entry[key] = math.nan
            if not entry["complete"] and images:
                add_note(f"{c.name} {label}: {len(subset)} of {len(images)} images; left out of the curves and BD deltas")
            entries.append(entry)
        means[c.name] = entries
    return means


def _curve(entries: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(e["bpp"], e[key]) for e in entries if e["complete"]]
    return [p[0] for p in points], [p[1] for p in points]


BD_COLUMNS = (
    ("bd_rate_psnr", "BD-rate PSNR", "psnr", "rate", "%"),
    ("bd_psnr", "BD-PSNR", "psnr", "quality", "dB"),
    ("bd_rate_msssim", "BD-rate MS-SSIM", "ms_ssim_db", "rate", "%"),
    ("bd_msssim_db", "BD-MS-SSIM", "ms_ssim_db", "quality", "dB"),
)


def bd_table(means: dict[str, list[dict]], anchors: Sequence[str], method: str) -> dict:
    """Bjøntegaard deltas of bgcodec (test) against each classic codec (anchor)."""
    from bgcodec import bdrate

    test = means[BGCODEC]
    table: dict[str, dict] = {}
    for anchor in anchors:
        entry: dict[str, Any] = {}
        for key, _, metric, kind, _ in BD_COLUMNS:
            ar, aq = _curve(means[anchor], metric)
            tr, tq = _curve(test, metric)
            func = bdrate.bd_rate if kind == "rate" else bdrate.bd_quality
            try:
                value = func(ar, aq, tr, tq, method=method)
                entry[key] = value if math.isfinite(value) else None
                entry[key + "_reason"] = None if math.isfinite(value) else "not finite"
            except bdrate.BDError as exc:
                entry[key] = None
                entry[key + "_reason"] = str(exc)
        table[anchor] = entry
    return {"method": method, "test": BGCODEC,
            "meaning": "bgcodec against each codec: BD-rate < 0 means bgcodec needs fewer bits for the same "
                       "quality; BD-PSNR / BD-MS-SSIM > 0 means bgcodec has the higher quality at the same rate",
            "table": table}


# --------------------------------------------------------------------------
# environment


def _version(module: str) -> str | None:
    try:
        mod = sys.modules.get(module) or __import__(module)
        return str(getattr(mod, "__version__", None) or "unknown")
    except Exception:
        return None


def _call(module: Any, name: str) -> str | None:
    try:
        return str(getattr(module, name)())
    except Exception:
        return None


def versions() -> dict:
    from PIL import features

    from bgcodec import __version__

    out: dict[str, Any] = {"python": platform.python_version(), "bgcodec": __version__}
    for module in ("torch", "numpy", "PIL", "imagecodecs", "matplotlib"):
        out["Pillow" if module == "PIL" else module] = _version(module)
    for key, feature in (("libjpeg", "jpg"), ("libwebp", "webp"), ("libavif", "avif")):
        try:
            out[key] = features.version(feature)
        except Exception:
            out[key] = None
    try:
        out["libjpeg_turbo"] = features.version_feature("libjpeg_turbo")
    except Exception:
        pass
    try:
        import imagecodecs

        out["libjxl"] = _call(imagecodecs, "jpegxl_version")
        out["openjpeg"] = _call(imagecodecs, "jpeg2k_version")
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        out["click"] = version("click")
    except Exception:
        pass
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: Any) -> dict:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except (OSError, AttributeError):
        pass
    info["device"] = str(device)
    if getattr(device, "type", None) == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------
# outputs


def _clean(value: Any) -> Any:
    """JSON-safe: inf → "inf", nan → null, numpy scalars → Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def _write_atomic(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb" if binary else "w", newline=None if binary else "", encoding=None if binary else "utf-8") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_outputs(results: dict, options: EvalOptions, codec_names: Sequence[str],
                  add_note: Callable[[str], None]) -> None:
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    anchors = load_anchors(options.anchors, add_note) if options.anchors else []
    plots = write_plots(results, out, anchors, add_note)
    results["plots"] = plots
    for name in codec_names:
        rows = [r for r in results["rows"] if r["codec"] == name]

        def write_csv(f, rows=rows):
            writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row[k]) for k in ROW_FIELDS})

        _write_atomic(out / f"{name}.csv", write_csv)
    _write_atomic(out / "summary.md", lambda f: f.write(summary_markdown(results)))
    _write_atomic(out / "results.json",
                  lambda f: f.write(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n"))


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return "inf" if math.isinf(value) else repr(value)
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def summary_markdown(results: dict) -> str:
    weights = results["weights"]
    dataset = results["dataset"]
    settings = results["settings"]
    lines = [f"# bgcodec evaluation on {dataset['name']}", ""]
    if weights["random_init"]:
        lines += ["> **⚠ random-init weights, not trained.** bgcodec was run with "
                  f"`{weights['spec']}`, a deterministic random initialisation: its numbers exercise the "
                  "code path (real .bgv files, decoded and measured) but say nothing about what the "
                  "trained codec achieves.", ""]
    lines += [
        f"- weights: `{weights['label']}` (model id {weights['identity']}, "
        f"λ range {weights['lambda_range'][0]:.4g} to {weights['lambda_range'][1]:.4g})",
        f"- dataset: `{dataset['path']}`, {len(dataset['images'])} image(s)"
        + (f" (--limit {dataset['limit']})" if dataset["limit"] else ""),
        f"- codecs: {', '.join(settings['codecs'])}"
        + (f"; skipped: {', '.join(f'{k} ({v})' for k, v in settings['skipped'].items())}" if settings["skipped"] else ""),
        f"- device: {settings['device']}; "
        f"machine: {results['machine'].get('cpu')} ({results['machine'].get('cpu_count')} cores)",
        f"- run: {results['created']}, wall time {results['wall_s']:.0f} s",
        "",
        "## Mean over images",
        "",
        "PSNR: mean of per-image PSNR on 8-bit RGB. MS-SSIM: mean of per-image MS-SSIM (RGB, 5 scales); "
        "MS-SSIM (dB) = −10·log10(1 − mean MS-SSIM). Times: mean wall time per image.",
        "",
        "| codec | setting | images | bpp | PSNR (dB) | MS-SSIM | MS-SSIM (dB) | encode (s) | decode (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    titles = {name: info.get("title", name) for name, info in settings["codec_settings"].items()}
    for name, entries in results["means"].items():
        for e in entries:
            flag = "" if e["complete"] else " (incomplete)"
            lines.append(
                f"| {titles.get(name, name)} | {e['setting']}{flag} | {e['images']} | {_fmt(e['bpp'])} | "
                f"{_fmt(e['psnr'], 2)} | {_fmt(e['ms_ssim'], 4)} | {_fmt(e['ms_ssim_db'], 2)} | "
                f"{_fmt(e['encode_s'], 3)} | {_fmt(e['decode_s'], 3)} |")
    bd = results["bd"]
    lines += ["", f"## Bjøntegaard deltas of bgcodec against each codec ({bd['method']})", "",
              "BD-rate < 0: bgcodec needs fewer bits for the same quality. BD-PSNR / BD-MS-SSIM > 0: "
              "bgcodec has the higher quality at the same rate. The MS-SSIM columns use MS-SSIM in dB as the "
              "quality. n/a: the curves do not overlap "
              "(or have too few points); the reasons are listed below the table.", ""]
    if weights["random_init"]:
        lines += ["(random-init weights, not trained: these deltas are not a statement about the codec.)", ""]
    lines += ["| against | " + " | ".join(f"{title} ({unit})" for _, title, _, _, unit in BD_COLUMNS) + " |",
              "|---|" + "---:|" * len(BD_COLUMNS)]
    reasons: list[str] = []
    for anchor, entry in bd["table"].items():
        cells = []
        for key, title, _, kind, _ in BD_COLUMNS:
            value = entry.get(key)
            if value is None:
                cells.append("n/a")
                reasons.append(f"{titles.get(anchor, anchor)}, {title}: {entry.get(key + '_reason')}")
            else:
                cells.append(f"{value:+.2f}")
        lines.append(f"| {titles.get(anchor, anchor)} | " + " | ".join(cells) + " |")
    if not bd["table"]:
        lines.append("| (no classic codec evaluated) |" + " |" * len(BD_COLUMNS))
    if reasons:
        lines += ["", "Why n/a:", ""] + [f"- {r}" for r in reasons]
    lines += ["", "## Settings", ""]
    for name, info in settings["codec_settings"].items():
        extra = "; ".join(f"{k}: {v}" for k, v in (info.get("options") or {}).items())
        library = info.get("library")
        lines.append(f"- **{info.get('title', name)}** (`{name}`): {info.get('param')} ∈ "
                     f"{{{', '.join(f'{v:g}' for v in info.get('values', []))}}}"
                     + (f"; {library}" if library else "") + (f"; {extra}" if extra else ""))
    if results["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    plots = results.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# anchors and plots


def load_anchors(folder: str, add_note: Callable[[str], None]) -> list[dict]:
    """Published curves from JSON files {"name", "results": {"bpp", "psnr-rgb"|"psnr", "ms-ssim-rgb"|...}}."""
    curves = []
    paths = sorted(Path(folder).glob("*.json"))
    if not paths:
        add_note(f"--anchors {folder}: no .json files")
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            res = data["results"]
            bpp = [float(v) for v in res["bpp"]]
            curve = {"name": str(data.get("name") or path.stem), "file": path.name, "bpp": bpp}
            for key in ("psnr-rgb", "psnr"):
                if key in res:
                    curve["psnr"] = [float(v) for v in res[key]]
                    break
            for key in ("ms-ssim-db-rgb", "ms-ssim-db"):
                if key in res:
                    curve["ms_ssim_db"] = [float(v) for v in res[key]]
                    break
            else:
                for key in ("ms-ssim-rgb", "ms-ssim"):
                    if key in res:
                        curve["ms_ssim_db"] = [ms_ssim_db(float(v)) for v in res[key]]
                        break
            for key in ("psnr", "ms_ssim_db"):
                if key in curve and len(curve[key]) != len(bpp):
                    raise ValueError(f"{len(bpp)} bpp values but {len(curve[key])} {key} values")
            curves.append(curve)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            add_note(f"anchor {path.name}: ignored ({type(exc).__name__}: {_one_line(exc)})")
    return curves


def write_plots(results: dict, out: Path, anchors: list[dict], add_note: Callable[[str], None]) -> list[str]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        add_note("plots skipped: matplotlib is not installed (pip install 'bgcodec[eval]')")
        return []
    titles = {name: info.get("title", name) for name, info in results["settings"]["codec_settings"].items()}
    weights = results["weights"]
    written = []
    for filename, key, ylabel in (("rd_psnr.png", "psnr", "PSNR RGB (dB)"),
                                  ("rd_msssim.png", "ms_ssim_db", "MS-SSIM RGB (dB)")):
        fig = Figure(figsize=(11, 6) if anchors else (8, 6))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        xmax = 0.0
        for name, entries in results["means"].items():
            pts = sorted((e["bpp"], e[key]) for e in entries
                         if e["complete"] and math.isfinite(e["bpp"]) and math.isfinite(e[key]))
            if not pts:
                continue
            xmax = max(xmax, max(p[0] for p in pts))
            style = {"linewidth": 2.5, "color": "black", "zorder": 5} if name == BGCODEC else {"linewidth": 1.5}
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4,
                    label=titles.get(name, name), **style)
        xmax = xmax * 1.05 if xmax > 0 else 2.0
        for curve in anchors:
            if key not in curve:
                continue
            pts = sorted((b, q) for b, q in zip(curve["bpp"], curve[key]) if b <= xmax and math.isfinite(q))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="--", linewidth=1, marker=".",
                        alpha=0.7, label=f"{curve['name']} (published)")
        ax.set_xlim(0, xmax)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        title = f"{results['dataset']['name']} ({len(results['dataset']['images'])} images), bgcodec: {weights['spec']}"
        if weights["random_init"]:
            title += "\nrandom-init weights, not trained"
        ax.set_title(title, fontsize=10, color="red" if weights["random_init"] else "black")
        ax.grid(True, alpha=0.3)
        if anchors:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        _write_atomic(out / filename, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
        written.append(filename)
    return written


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
