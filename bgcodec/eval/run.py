"""Rate-distortion evaluation of bgcodec against the classic image codecs (``bgcodec eval``).

For every image of a dataset folder and every setting of every codec: encode to real
bytes, decode, and measure bpp (8·bytes / pixels, whole file), PSNR and MS-SSIM on 8-bit
RGB, and the encode / decode times. bgcodec goes through exactly the ``encode`` /
``decode`` code path (``Codec.encode`` → .bgv bytes → ``Codec.decode``).

Outputs (in the --out folder): ``results.json`` (everything), one CSV per codec (one row
per image and setting), ``summary.md`` (mean table and Bjøntegaard deltas) and the RD
plots ``rd_psnr.png`` and ``rd_msssim.png``.

The metrics are in :mod:`bgcodec.eval.metrics`, the classic codecs in
:mod:`bgcodec.eval.codecs`, the outputs in :mod:`bgcodec.eval.report`. The codecs beyond
Pillow (JPEG XL and JPEG 2000 via ``imagecodecs``) and the plots (``matplotlib``) are
optional (``pip install 'bgcodec[eval]'``); a codec or plot that is unavailable is skipped
with a note.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BgcodecError, describe_failure, one_line
from ..imageio import find_images, load_image
from ..progress import Progress, no_progress
from . import bdrate
from .codecs import BGCODEC, CLASSIC_CODECS, CODEC_CLASSES, CodecUnavailable, EvalCodec
from .metrics import MS_SSIM_MIN_SIZE, MSSSIM, ms_ssim_db, psnr
from .report import write_outputs
from .system import machine, versions

DEFAULT_NUM_LAMBDAS = 8
RESULTS_FORMAT = "bgcodec-eval-1"
MAX_ERROR_NOTES = 20
"""Failed points beyond this many are only counted in the notes (all are in results.json)."""

METRIC_DEFINITIONS = {
    "bpp": "8 * file bytes / (width * height), whole file incl. headers",
    "psnr": "10 log10(255^2 / MSE) over 8-bit RGB (all pixels and channels); mean = mean of per-image PSNR",
    "ms_ssim": "5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), Gaussian window 11, sigma 1.5, "
               "on [0, 255] RGB per channel, averaged over channels; mean = mean over images",
    "ms_ssim_db": "-10 log10(1 - ms_ssim); in the means: of the mean MS-SSIM",
    "encode_s/decode_s": "wall time of one encode / decode call (bytes in memory, no file I/O); "
                         "bgcodec after one untimed warm-up",
}

AddNote = Callable[[str], None]


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


class BgcodecCodec(EvalCodec):
    """bgcodec through the same calls as ``bgcodec encode`` / ``bgcodec decode``."""

    name, title, param = BGCODEC, "bgcodec", "lambda"

    def __init__(self, codec: Any, lambdas: Sequence[float], weights_spec: str):
        super().__init__()
        self.codec = codec
        self.values = tuple(lambdas)
        self.weights_spec = weights_spec
        self.title = f"bgcodec ({weights_spec})"

    def label(self, value: float) -> str:
        return f"lambda={value:.4g}"

    def encode(self, image: np.ndarray, value: float) -> bytes:
        return self.codec.encode(image, value)

    def decode(self, data: bytes) -> np.ndarray:
        return self.codec.decode(data)

    def warm_up(self, image: np.ndarray) -> None:
        try:
            self.decode(self.encode(np.ascontiguousarray(image[:64, :64]), self.values[0]))
        except Exception:
            pass  # a real problem shows up (and is recorded) at the timed points


def default_lambdas(lambda_range: tuple[float, float], n: int = DEFAULT_NUM_LAMBDAS) -> list[float]:
    lo, hi = lambda_range
    return [float(v) for v in np.geomspace(lo, hi, n)]


def is_random_weights(spec: str) -> bool:
    return spec.startswith("random:")


def dataset_name(path: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(path))) or "dataset"


# --------------------------------------------------------------------------
# the run


def run(options: EvalOptions, *, progress: Progress = no_progress, note: AddNote | None = None) -> dict:
    """Run the whole evaluation and write the outputs; returns the results dict.

    Each (image, codec, setting) point is reported to ``progress``; ``note(message)``
    receives notes as they arise. Raises BgcodecError for fatal problems
    (no images, weights that cannot be loaded, λ out of range).
    """
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    notes = _Notes(forward=note)

    images = find_images([options.dataset], options.limit)
    bgcodec = _load_bgcodec(options)
    classic, skipped = _prepare_classic_codecs(options.codecs, notes.add)
    codecs = [bgcodec, *classic]
    sweep = _Sweep(total=len(images) * sum(len(c.values) for c in codecs), progress=progress)
    _measure_all(sweep, images, codecs, notes.add)
    _note_sweep_problems(sweep, notes.add)
    means = aggregate(sweep.rows, codecs, [info["name"] for info in sweep.images], notes.add)
    bd = bd_table(means, [c.name for c in classic], options.bd_method)
    wall_s = time.perf_counter() - started

    results = {
        "format": RESULTS_FORMAT,
        "created": started_at.isoformat(timespec="seconds"),
        "command": list(options.command),
        "dataset": {"path": os.path.abspath(options.dataset), "name": dataset_name(options.dataset),
                    "limit": options.limit, "images": sweep.images},
        "weights": _weights_info(bgcodec),
        "settings": _settings_info(options, bgcodec, codecs, skipped),
        "means": means,
        "bd": bd,
        "notes": notes.messages,
        "errors": sweep.errors,
        "versions": versions(),
        "machine": machine(bgcodec.codec.device),
        "wall_s": wall_s,
        "rows": sweep.rows,
    }
    write_outputs(results, options.out, options.anchors, [c.name for c in codecs], notes.add)
    results["wall_s"] = time.perf_counter() - started
    return results


class _Notes:
    """The run's notes in order; each is also passed on to ``forward`` as it arises."""

    def __init__(self, forward: AddNote | None) -> None:
        self.messages: list[str] = []
        self._forward = forward

    def add(self, message: str) -> None:
        self.messages.append(message)
        if self._forward is not None:
            self._forward(message)


def _load_bgcodec(options: EvalOptions) -> BgcodecCodec:
    """The model as ``bgcodec encode`` loads it, with the λ values checked against its range."""
    from bgcodec.codec import Codec
    from ..config import resolve

    weights_spec = resolve(options.weights)
    codec = Codec.load(options.weights, device=options.device)
    if options.lambdas:
        lambdas = [float(v) for v in options.lambdas]
        for lmbda in lambdas:
            codec.check_lambda(lmbda)
    else:
        lambdas = default_lambdas(codec.lambda_range)
    return BgcodecCodec(codec, lambdas, weights_spec)


def _prepare_classic_codecs(names: Sequence[str], add_note: AddNote) -> tuple[list[EvalCodec], dict[str, str]]:
    """The named codecs that work here, and for each of the others why it was skipped."""
    ready: list[EvalCodec] = []
    skipped: dict[str, str] = {}
    for name in names:
        codec = CODEC_CLASSES[name]()
        reason = _try_prepare(codec)
        if reason is not None:
            skipped[name] = reason
            add_note(f"{name}: skipped: {reason}")
            continue
        for message in codec.notes:
            add_note(f"{name}: {message}")
        ready.append(codec)
    return ready, skipped


def _try_prepare(codec: EvalCodec) -> str | None:
    """Prepare ``codec``; None when it works here, else why not."""
    try:
        codec.prepare()
    except CodecUnavailable as exc:
        return str(exc)
    except Exception as exc:
        return f"does not work here ({describe_failure(exc)})"
    return None


@dataclass
class _Sweep:
    """What measuring every (image, codec, setting) point gave, and how far it is."""

    total: int
    progress: Progress
    done: int = 0
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # name, width and height of each image that loaded
    padded: list[str] = field(default_factory=list)  # images mirror-padded for MS-SSIM

    def advance(self, label: str) -> None:
        self.done += 1
        self.progress(self.done, self.total, label)


def _measure_all(sweep: _Sweep, paths: Sequence[Path], codecs: Sequence[EvalCodec], add_note: AddNote) -> None:
    for path in paths:
        try:
            image, image_notes = load_image(path, drop_alpha=True)
        except BgcodecError as exc:
            sweep.errors.append({"image": path.name, "codec": None, "setting": None, "error": one_line(exc)})
            add_note(f"{path.name}: skipped: {one_line(exc)}")
            for codec in codecs:
                for value in codec.values:
                    sweep.advance(f"{path.name} {codec.name} {codec.label(value)}")
            continue
        for message in image_notes:
            add_note(f"{path.name}: {message}")
        _measure_image(sweep, path.name, image, codecs)


def _measure_image(sweep: _Sweep, name: str, image: np.ndarray, codecs: Sequence[EvalCodec]) -> None:
    """Every codec at every setting on one image; a point that fails becomes an error entry."""
    if not sweep.images:
        for codec in codecs:
            codec.warm_up(image)
    height, width = image.shape[:2]
    sweep.images.append({"name": name, "width": width, "height": height})
    reference = MSSSIM(image)
    if reference.padded:
        sweep.padded.append(name)
    for codec in codecs:
        for value in codec.values:
            label = codec.label(value)
            try:
                sweep.rows.append(_measure_point(codec, value, name, image, reference))
            except Exception as exc:
                sweep.errors.append({"image": name, "codec": codec.name, "setting": label,
                                     "error": describe_failure(exc)})
            finally:
                sweep.advance(f"{name} {codec.name} {label}")


def _measure_point(codec: EvalCodec, value: float, name: str, image: np.ndarray, reference: MSSSIM) -> dict:
    """Encode and decode one image at one setting; the row of its measurements (report.ROW_FIELDS)."""
    t0 = time.perf_counter()
    data = codec.encode(image, value)
    t1 = time.perf_counter()
    decoded = codec.decode(data)
    t2 = time.perf_counter()
    if decoded.shape != image.shape or decoded.dtype != np.uint8:
        raise BgcodecError(f"decoded to {decoded.dtype} {decoded.shape}, expected uint8 {image.shape}")
    quality = reference(decoded)
    height, width = image.shape[:2]
    return {
        "codec": codec.name, "setting": codec.label(value), "param": codec.param, "value": float(value),
        "image": name, "width": width, "height": height, "bytes": len(data),
        "bpp": 8 * len(data) / (width * height), "psnr": psnr(image, decoded),
        "ms_ssim": quality, "ms_ssim_db": ms_ssim_db(quality),
        "encode_s": t1 - t0, "decode_s": t2 - t1,
    }


def _note_sweep_problems(sweep: _Sweep, add_note: AddNote) -> None:
    """Notes on the images padded for MS-SSIM and on the first failed points."""
    if sweep.padded:
        listed = ", ".join(sweep.padded[:5]) + (", ..." if len(sweep.padded) > 5 else "")
        add_note(f"MS-SSIM: {len(sweep.padded)} image(s) have a side below {MS_SSIM_MIN_SIZE} px, too small for "
                 f"5 scales; they were mirror-padded to {MS_SSIM_MIN_SIZE} px before MS-SSIM ({listed})")
    for error in sweep.errors[:MAX_ERROR_NOTES]:
        if error["codec"]:
            add_note(f"error: {error['image']} {error['codec']} {error['setting']}: {error['error']}")
    if len(sweep.errors) > MAX_ERROR_NOTES:
        add_note(f"... and {len(sweep.errors) - MAX_ERROR_NOTES} more errors (see results.json)")


def _weights_info(bgcodec: BgcodecCodec) -> dict:
    codec, spec = bgcodec.codec, bgcodec.weights_spec
    random_init = is_random_weights(spec)
    return {"spec": spec, "random_init": random_init,
            "label": spec + (" (random-init weights, not trained)" if random_init else ""),
            "identity": codec.identity.hex(), "lambda_range": list(codec.lambda_range),
            "metadata": dict(codec.metadata)}


def _settings_info(options: EvalOptions, bgcodec: BgcodecCodec, codecs: Sequence[EvalCodec],
                   skipped: dict[str, str]) -> dict:
    return {
        "lambdas": list(bgcodec.values), "codecs": [c.name for c in codecs], "skipped": skipped,
        "bd_method": options.bd_method, "device": str(bgcodec.codec.device),
        "codec_settings": {c.name: c.describe() for c in codecs},
        "metrics": dict(METRIC_DEFINITIONS),
    }


# --------------------------------------------------------------------------
# aggregation and Bjøntegaard deltas


def aggregate(rows: list[dict], codecs: Sequence[EvalCodec], images: Sequence[str],
              add_note: AddNote) -> dict[str, list[dict]]:
    """Mean over images per codec and setting. A setting that failed on some image is kept
    in the table (``complete`` false) but left out of the curves and BD deltas."""
    means: dict[str, list[dict]] = {}
    for codec in codecs:
        entries = []
        for value in codec.values:
            label = codec.label(value)
            subset = [r for r in rows if r["codec"] == codec.name and r["setting"] == label]
            complete = len(subset) == len(images) > 0
            entries.append({"codec": codec.name, "setting": label, "param": codec.param, "value": float(value),
                            "images": len(subset), "complete": complete, **_mean_metrics(subset)})
            if images and not complete:
                add_note(f"{codec.name} {label}: {len(subset)} of {len(images)} images; "
                         "left out of the curves and BD deltas")
        means[codec.name] = entries
    return means


def _mean_metrics(rows: list[dict]) -> dict[str, float]:
    """Mean bpp, PSNR, MS-SSIM and times of ``rows``; MS-SSIM in dB of the mean MS-SSIM; nan if no rows."""
    if not rows:
        return dict.fromkeys(("bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"), math.nan)
    means = {key: float(np.mean([r[key] for r in rows])) for key in ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s")}
    means["ms_ssim_db"] = ms_ssim_db(means["ms_ssim"])
    return means


def bd_table(means: dict[str, list[dict]], anchors: Sequence[str], method: str) -> dict:
    """Bjøntegaard deltas of bgcodec (test) against each classic codec (anchor)."""
    return {"method": method, "test": BGCODEC,
            "meaning": "bgcodec against each codec: BD-rate < 0 means bgcodec needs fewer bits for the same "
                       "quality; BD-PSNR / BD-MS-SSIM > 0 means bgcodec has the higher quality at the same rate",
            "table": {anchor: _bd_entry(means[anchor], means[BGCODEC], method) for anchor in anchors}}


def _bd_entry(anchor: list[dict], test: list[dict], method: str) -> dict[str, Any]:
    """Each BD column's value, or None with the reason in ``<column>_reason``."""
    entry: dict[str, Any] = {}
    for column in bdrate.BD_COLUMNS:
        delta = bdrate.bd_rate if column.kind == "rate" else bdrate.bd_quality
        try:
            value = delta(*_curve(anchor, column.metric), *_curve(test, column.metric), method=method)
        except bdrate.BDError as exc:
            entry[column.key], entry[column.key + "_reason"] = None, str(exc)
            continue
        finite = math.isfinite(value)
        entry[column.key] = value if finite else None
        entry[column.key + "_reason"] = None if finite else "not finite"
    return entry


def _curve(entries: list[dict], metric: str) -> tuple[list[float], list[float]]:
    """Rates and qualities of the complete settings."""
    points = [(e["bpp"], e[metric]) for e in entries if e["complete"]]
    return [p[0] for p in points], [p[1] for p in points]
