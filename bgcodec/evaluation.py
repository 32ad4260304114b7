"""Rate-distortion evaluation of bgcodec against the classic image codecs (``bgcodec eval``).

For every image of a dataset folder and every setting of every codec: encode to real
bytes, decode, and measure bpp (8·bytes / pixels, whole file), PSNR and MS-SSIM on 8-bit
RGB, and the encode / decode times. bgcodec goes through exactly the ``encode`` /
``decode`` code path (``Codec.encode`` → .bgv bytes → ``Codec.decode``).

Outputs (in the --out folder): ``results.json`` (everything), one CSV per codec (one row
per image and setting), ``summary.md`` (mean table and Bjøntegaard deltas) and the RD
plots ``rd_psnr.png`` and ``rd_msssim.png``.

The metrics are in :mod:`bgcodec.metrics`, the classic codecs in
:mod:`bgcodec.classic_codecs`. The codecs beyond Pillow (JPEG XL and JPEG 2000 via
``imagecodecs``) and the plots (``matplotlib``) are optional: ``pip install 'bgcodec[eval]'``;
a codec or plot that is unavailable is skipped with a note.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from bgcodec import bdrate
from bgcodec.classic_codecs import CLASSIC_CODECS, CODEC_CLASSES, CodecUnavailable, EvalCodec
from bgcodec.errors import BgcodecError, one_line
from bgcodec.metrics import MS_SSIM_MIN_SIZE, MSSSIM, ms_ssim_db, psnr
from bgcodec.system import library_version, machine_info, module_version

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".webp")
BGCODEC = "bgcodec"
DEFAULT_NUM_LAMBDAS = 8
RESULTS_FORMAT = "bgcodec-eval-1"
MAX_ERROR_NOTES = 20
"""Failed points beyond this many are only counted in the notes (all are in results.json)."""

ROW_FIELDS = ("codec", "setting", "param", "value", "image", "width", "height", "bytes", "bpp",
              "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s")
METRIC_DEFINITIONS = {
    "bpp": "8 * file bytes / (width * height), whole file incl. headers",
    "psnr": "10 log10(255^2 / MSE) over 8-bit RGB (all pixels and channels); mean = mean of per-image PSNR",
    "ms_ssim": "5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), Gaussian window 11, sigma 1.5, "
               "on [0, 255] RGB per channel, averaged over channels; mean = mean over images",
    "ms_ssim_db": "-10 log10(1 - ms_ssim); in the means: of the mean MS-SSIM",
    "encode_s/decode_s": "wall time of one encode / decode call (bytes in memory, no file I/O); "
                         "bgcodec after one untimed warm-up",
}


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
RD_PLOTS = (("rd_psnr.png", "psnr", "PSNR RGB (dB)"), ("rd_msssim.png", "ms_ssim_db", "MS-SSIM RGB (dB)"))

AddNote = Callable[[str], None]
Progress = Callable[[int, str], None]


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
    """The files a run with these classic codecs may write into --out."""
    return ["results.json", "summary.md", "rd_psnr.png", "rd_msssim.png"] + [
        f"{name}.csv" for name in (BGCODEC, *codecs)]


def default_lambdas(lambda_range: tuple[float, float], n: int = DEFAULT_NUM_LAMBDAS) -> list[float]:
    lo, hi = lambda_range
    return [float(v) for v in np.geomspace(lo, hi, n)]


def is_random_weights(spec: str) -> bool:
    return spec.startswith("random:")


def dataset_name(path: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(path))) or "dataset"


# --------------------------------------------------------------------------
# the run


def run(options: EvalOptions, *, progress: Progress | None = None, note: AddNote | None = None) -> dict:
    """Run the whole evaluation and write the outputs; returns the results dict.

    ``progress(total, "")`` is called once with the number of steps, then
    ``progress(0, label)`` before and ``progress(1, label)`` after each (image, setting).
    ``note(message)`` receives notes as they arise. Raises BgcodecError for fatal problems
    (no images, weights that cannot be loaded, λ out of range).
    """
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    notes = _Notes(forward=note)
    progress = progress or _no_progress

    images = list_images(options.dataset, options.limit)
    bgcodec = _load_bgcodec(options)
    classic, skipped = _prepare_classic_codecs(options.codecs, notes.add)
    codecs = [bgcodec, *classic]
    progress(len(images) * sum(len(c.values) for c in codecs), "")
    sweep = _measure_all(images, codecs, progress, notes.add)
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
    write_outputs(results, options, [c.name for c in codecs], notes.add)
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


def _no_progress(step: int, label: str) -> None:
    pass


def _load_bgcodec(options: EvalOptions) -> BgcodecCodec:
    """The model as ``bgcodec encode`` loads it, with the λ values checked against its range."""
    from bgcodec.codec import Codec
    from bgcodec.weights import resolve

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
        return f"does not work here ({type(exc).__name__}: {one_line(exc)})"
    return None


@dataclass
class _Sweep:
    """What measuring every (image, codec, setting) point gave."""

    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # name, width and height of each image that loaded
    padded: list[str] = field(default_factory=list)  # images mirror-padded for MS-SSIM


def _measure_all(paths: Sequence[Path], codecs: Sequence[EvalCodec], progress: Progress,
                 add_note: AddNote) -> _Sweep:
    from bgcodec.imageio import load_image

    sweep = _Sweep()
    for path in paths:
        try:
            image, image_notes = load_image(str(path), drop_alpha=True)
        except BgcodecError as exc:
            sweep.errors.append({"image": path.name, "codec": None, "setting": None, "error": one_line(exc)})
            add_note(f"{path.name}: skipped: {one_line(exc)}")
            for codec in codecs:
                for value in codec.values:
                    progress(1, f"{path.name} {codec.name} {codec.label(value)}")
            continue
        for message in image_notes:
            add_note(f"{path.name}: {message}")
        _measure_image(path.name, image, codecs, progress, sweep)
    return sweep


def _measure_image(name: str, image: np.ndarray, codecs: Sequence[EvalCodec], progress: Progress,
                   sweep: _Sweep) -> None:
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
            progress(0, f"{name} {codec.name} {label}")
            try:
                sweep.rows.append(_measure_point(codec, value, name, image, reference))
            except Exception as exc:
                sweep.errors.append({"image": name, "codec": codec.name, "setting": label,
                                     "error": _point_error(exc)})
            finally:
                progress(1, f"{name} {codec.name} {label}")


def _measure_point(codec: EvalCodec, value: float, name: str, image: np.ndarray, reference: MSSSIM) -> dict:
    """Encode and decode one image at one setting; the row of its measurements (ROW_FIELDS)."""
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


def _point_error(exc: Exception) -> str:
    """The message of our own errors; type and message of anything else."""
    if isinstance(exc, BgcodecError):
        return one_line(exc)
    return f"{type(exc).__name__}: {one_line(exc)}"


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
    for column in BD_COLUMNS:
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


# --------------------------------------------------------------------------
# environment


def versions() -> dict[str, Any]:
    """Versions of Python, bgcodec and the libraries behind the codecs and plots."""
    from importlib.metadata import version

    from bgcodec import __version__

    out: dict[str, Any] = {"python": platform.python_version(), "bgcodec": __version__}
    for module in ("torch", "numpy", "PIL", "imagecodecs", "matplotlib"):
        out["Pillow" if module == "PIL" else module] = module_version(module)
    out.update(_pillow_library_versions())
    out.update(_imagecodecs_library_versions())
    try:
        out["click"] = version("click")
    except Exception:
        pass
    return out


def _pillow_library_versions() -> dict[str, str | None]:
    from PIL import features

    out: dict[str, str | None] = {}
    for key, feature in (("libjpeg", "jpg"), ("libwebp", "webp"), ("libavif", "avif")):
        try:
            out[key] = features.version(feature)
        except Exception:
            out[key] = None
    try:
        out["libjpeg_turbo"] = features.version_feature("libjpeg_turbo")
    except Exception:
        pass
    return out


def _imagecodecs_library_versions() -> dict[str, str | None]:
    try:
        import imagecodecs
    except ImportError:
        return {}
    return {"libjxl": library_version(imagecodecs, "jpegxl_version"),
            "openjpeg": library_version(imagecodecs, "jpeg2k_version")}


def machine(device: Any) -> dict[str, Any]:
    """The machine (:func:`bgcodec.system.machine_info`), the device bgcodec ran on and its GPU."""
    info = {**machine_info(), "device": str(device)}
    if getattr(device, "type", None) == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------
# outputs


def write_outputs(results: dict, options: EvalOptions, codec_names: Sequence[str], add_note: AddNote) -> None:
    """The plots, one CSV per codec, summary.md and results.json (in that order: the plots add notes)."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    anchors = load_anchors(options.anchors, add_note) if options.anchors else []
    results["plots"] = write_plots(results, out, anchors, add_note)
    for name in codec_names:
        _write_csv(out / f"{name}.csv", [r for r in results["rows"] if r["codec"] == name])
    _write_atomic(out / "summary.md", lambda f: f.write(summary_markdown(results)))
    _write_atomic(out / "results.json",
                  lambda f: f.write(json.dumps(_json_safe(results), indent=1, allow_nan=False) + "\n"))


def _write_atomic(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """``write(file)`` into a temporary file next to ``path``, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        text_options = {} if binary else {"newline": "", "encoding": "utf-8"}
        with open(tmp, "wb" if binary else "w", **text_options) as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _csv_value(row[key]) for key in ROW_FIELDS} for row in rows)

    _write_atomic(path, write)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return "inf" if math.isinf(value) else repr(value)
    return value


def _json_safe(value: Any) -> Any:
    """JSON-safe: inf → "inf", nan → null, numpy scalars → Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


# --------------------------------------------------------------------------
# summary.md


def summary_markdown(results: dict) -> str:
    """summary.md: the run, the mean table, the BD table, the codec settings, notes and plots."""
    titles = _codec_titles(results)
    random_init = results["weights"]["random_init"]
    lines = _summary_header(results)
    lines += _means_section(results["means"], titles)
    lines += _bd_section(results["bd"], titles, random_init)
    lines += _settings_section(results["settings"]["codec_settings"])
    if results["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    plots = results.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _codec_titles(results: dict) -> dict[str, str]:
    return {name: info.get("title", name) for name, info in results["settings"]["codec_settings"].items()}


def _summary_header(results: dict) -> list[str]:
    weights, dataset, settings = results["weights"], results["dataset"], results["settings"]
    lines = [f"# bgcodec evaluation on {dataset['name']}", ""]
    if weights["random_init"]:
        lines += ["> **⚠ random-init weights, not trained.** bgcodec was run with "
                  f"`{weights['spec']}`, a deterministic random initialisation: its numbers exercise the "
                  "code path (real .bgv files, decoded and measured) but say nothing about what the "
                  "trained codec achieves.", ""]
    limit = f" (--limit {dataset['limit']})" if dataset["limit"] else ""
    skipped = settings["skipped"]
    skipped_text = f"; skipped: {', '.join(f'{k} ({v})' for k, v in skipped.items())}" if skipped else ""
    host = results["machine"]
    return lines + [
        f"- weights: `{weights['label']}` (model id {weights['identity']}, "
        f"λ range {weights['lambda_range'][0]:.4g} to {weights['lambda_range'][1]:.4g})",
        f"- dataset: `{dataset['path']}`, {len(dataset['images'])} image(s){limit}",
        f"- codecs: {', '.join(settings['codecs'])}{skipped_text}",
        f"- device: {settings['device']}; "
        f"machine: {host.get('cpu')} ({host.get('cpu_count')} cores)",
        f"- run: {results['created']}, wall time {results['wall_s']:.0f} s",
    ]


def _means_section(means: dict[str, list[dict]], titles: dict[str, str]) -> list[str]:
    lines = [
        "",
        "## Mean over images",
        "",
        "PSNR: mean of per-image PSNR on 8-bit RGB. MS-SSIM: mean of per-image MS-SSIM (RGB, 5 scales); "
        "MS-SSIM (dB) = −10·log10(1 − mean MS-SSIM). Times: mean wall time per image.",
        "",
        "| codec | setting | images | bpp | PSNR (dB) | MS-SSIM | MS-SSIM (dB) | encode (s) | decode (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entries in means.items():
        for e in entries:
            flag = "" if e["complete"] else " (incomplete)"
            lines.append(
                f"| {titles.get(name, name)} | {e['setting']}{flag} | {e['images']} | {_format_number(e['bpp'])} | "
                f"{_format_number(e['psnr'], 2)} | {_format_number(e['ms_ssim'], 4)} | "
                f"{_format_number(e['ms_ssim_db'], 2)} | {_format_number(e['encode_s'], 3)} | "
                f"{_format_number(e['decode_s'], 3)} |")
    return lines


def _bd_section(bd: dict, titles: dict[str, str], random_init: bool) -> list[str]:
    lines = ["", f"## Bjøntegaard deltas of bgcodec against each codec ({bd['method']})", "",
             "BD-rate < 0: bgcodec needs fewer bits for the same quality. BD-PSNR / BD-MS-SSIM > 0: "
             "bgcodec has the higher quality at the same rate. The MS-SSIM columns use MS-SSIM in dB as the "
             "quality. n/a: the curves do not overlap "
             "(or have too few points); the reasons are listed below the table.", ""]
    if random_init:
        lines += ["(random-init weights, not trained: these deltas are not a statement about the codec.)", ""]
    lines += ["| against | " + " | ".join(f"{c.title} ({c.unit})" for c in BD_COLUMNS) + " |",
              "|---|" + "---:|" * len(BD_COLUMNS)]
    reasons: list[str] = []
    for anchor, entry in bd["table"].items():
        title = titles.get(anchor, anchor)
        cells = []
        for column in BD_COLUMNS:
            value = entry.get(column.key)
            if value is None:
                cells.append("n/a")
                reasons.append(f"{title}, {column.title}: {entry.get(column.key + '_reason')}")
            else:
                cells.append(f"{value:+.2f}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if not bd["table"]:
        lines.append("| (no classic codec evaluated) |" + " |" * len(BD_COLUMNS))
    if reasons:
        lines += ["", "Why n/a:", ""] + [f"- {r}" for r in reasons]
    return lines


def _settings_section(codec_settings: dict[str, dict]) -> list[str]:
    lines = ["", "## Settings", ""]
    for name, info in codec_settings.items():
        values = ", ".join(f"{v:g}" for v in info.get("values", []))
        library = info.get("library")
        extra = "; ".join(f"{k}: {v}" for k, v in (info.get("options") or {}).items())
        lines.append(f"- **{info.get('title', name)}** (`{name}`): {info.get('param')} ∈ {{{values}}}"
                     + (f"; {library}" if library else "") + (f"; {extra}" if extra else ""))
    return lines


def _format_number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


# --------------------------------------------------------------------------
# anchors and plots


def load_anchors(folder: str, add_note: AddNote) -> list[dict]:
    """Published curves from JSON files {"name", "results": {"bpp", "psnr-rgb"|"psnr", "ms-ssim-rgb"|...}}."""
    paths = sorted(Path(folder).glob("*.json"))
    if not paths:
        add_note(f"--anchors {folder}: no .json files")
    curves = []
    for path in paths:
        try:
            curves.append(_read_anchor(path))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            add_note(f"anchor {path.name}: ignored ({type(exc).__name__}: {one_line(exc)})")
    return curves


def _read_anchor(path: Path) -> dict:
    """One published curve: name, file, bpp, and psnr and/or ms_ssim_db (MS-SSIM converted to dB)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    published = data["results"]
    bpp = [float(v) for v in published["bpp"]]
    curve = {"name": str(data.get("name") or path.stem), "file": path.name, "bpp": bpp}
    psnr_values = _first_series(published, ("psnr-rgb", "psnr"))
    if psnr_values is not None:
        curve["psnr"] = psnr_values
    ms_ssim_db_values = _first_series(published, ("ms-ssim-db-rgb", "ms-ssim-db"))
    if ms_ssim_db_values is None:
        ms_ssim_values = _first_series(published, ("ms-ssim-rgb", "ms-ssim"))
        if ms_ssim_values is not None:
            ms_ssim_db_values = [ms_ssim_db(v) for v in ms_ssim_values]
    if ms_ssim_db_values is not None:
        curve["ms_ssim_db"] = ms_ssim_db_values
    for key in ("psnr", "ms_ssim_db"):
        if key in curve and len(curve[key]) != len(bpp):
            raise ValueError(f"{len(bpp)} bpp values but {len(curve[key])} {key} values")
    return curve


def _first_series(published: dict, keys: Sequence[str]) -> list[float] | None:
    """The values under the first of ``keys`` that ``published`` has, as floats."""
    for key in keys:
        if key in published:
            return [float(v) for v in published[key]]
    return None


def write_plots(results: dict, out: Path, anchors: list[dict], add_note: AddNote) -> list[str]:
    """The RD plots (PSNR and MS-SSIM in dB against bpp); the names of the files written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        add_note("plots skipped: matplotlib is not installed (pip install 'bgcodec[eval]')")
        return []
    written = []
    for filename, metric, ylabel in RD_PLOTS:
        fig = Figure(figsize=(11, 6) if anchors else (8, 6))
        FigureCanvasAgg(fig)
        _draw_rd_plot(fig.add_subplot(), results, metric, ylabel, anchors)
        fig.tight_layout()
        _write_atomic(out / filename, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
        written.append(filename)
    return written


def _draw_rd_plot(ax: Any, results: dict, metric: str, ylabel: str, anchors: list[dict]) -> None:
    xmax = _plot_codec_curves(ax, results, metric)
    xmax = xmax * 1.05 if xmax > 0 else 2.0
    _plot_anchor_curves(ax, anchors, metric, xmax)
    ax.set_xlim(0, xmax)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    weights, dataset = results["weights"], results["dataset"]
    title = f"{dataset['name']} ({len(dataset['images'])} images), bgcodec: {weights['spec']}"
    if weights["random_init"]:
        title += "\nrandom-init weights, not trained"
    ax.set_title(title, fontsize=10, color="red" if weights["random_init"] else "black")
    ax.grid(True, alpha=0.3)
    if anchors:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=8, loc="lower right")


def _plot_codec_curves(ax: Any, results: dict, metric: str) -> float:
    """One curve per codec (complete, finite settings only), bgcodec in bold; the largest bpp drawn."""
    titles = _codec_titles(results)
    xmax = 0.0
    for name, entries in results["means"].items():
        points = sorted((e["bpp"], e[metric]) for e in entries
                        if e["complete"] and math.isfinite(e["bpp"]) and math.isfinite(e[metric]))
        if not points:
            continue
        xmax = max(xmax, max(p[0] for p in points))
        style = {"linewidth": 2.5, "color": "black", "zorder": 5} if name == BGCODEC else {"linewidth": 1.5}
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=4,
                label=titles.get(name, name), **style)
    return xmax


def _plot_anchor_curves(ax: Any, anchors: list[dict], metric: str, xmax: float) -> None:
    """The published curves, dashed, up to ``xmax`` bpp."""
    for curve in anchors:
        if metric not in curve:
            continue
        points = sorted((b, q) for b, q in zip(curve["bpp"], curve[metric]) if b <= xmax and math.isfinite(q))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], linestyle="--", linewidth=1, marker=".",
                    alpha=0.7, label=f"{curve['name']} (published)")
