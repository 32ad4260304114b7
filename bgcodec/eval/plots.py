"""Rate–distortion plots: ``bgcodec eval``'s (every codec, optionally published curves) and
``bgcodec bound``'s (the bound model next to the codec), drawn by one routine.

matplotlib is optional (``pip install 'bgcodec[eval]'``): without it nothing is drawn and
the callers say so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from collections.abc import Callable
from typing import Any, NamedTuple, Sequence

from ..errors import one_line
from ..files import write_atomically
from .codecs import BGCODEC
from .metrics import ms_ssim_db

RD_PLOTS = (("rd_psnr.png", "psnr", "PSNR RGB (dB)"), ("rd_msssim.png", "ms_ssim_db", "MS-SSIM RGB (dB)"))
"""``bgcodec eval``'s plots: file name, metric, axis label."""

BOLD = {"linewidth": 2.5, "color": "black", "zorder": 5}
PUBLISHED = {"linestyle": "--", "linewidth": 1, "marker": ".", "alpha": 0.7}


class Curve(NamedTuple):
    label: str
    points: list[tuple[float, float]]
    """(bpp, quality), sorted by bpp."""
    style: dict[str, Any]
    """matplotlib line options."""


def curve(label: str, bpp: Sequence[float], quality: Sequence[float], **style: Any) -> Curve:
    """A Curve of the finite points, sorted by rate; drawn with markers unless ``style`` says otherwise."""
    points = sorted((b, q) for b, q in zip(bpp, quality) if math.isfinite(b) and math.isfinite(q))
    return Curve(label, points, {"marker": "o", "markersize": 4, **style})


def draw_rd_plot(path: str | Path, curves: Sequence[Curve], ylabel: str, title: str, *, title_color: str = "black",
                 xmax: float | None = None, legend_outside: bool = False) -> bool:
    """Quality against bpp for each curve (those without points are left out), written as
    PNG to ``path``; False when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(11, 6) if legend_outside else (8, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for c in curves:
        visible = [p for p in c.points if xmax is None or p[0] <= xmax]
        if visible:
            ax.plot([p[0] for p in visible], [p[1] for p in visible], label=c.label, **c.style)
    if xmax is not None:
        ax.set_xlim(0, xmax)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, color=title_color)
    ax.grid(True, alpha=0.3)
    if legend_outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return True


def write_eval_plots(results: dict, out: Path, anchors: list[dict]) -> list[str]:
    """``bgcodec eval``'s plots (RD_PLOTS) of the complete settings, with the published
    ``anchors`` dashed; the names of the files written (none without matplotlib)."""
    weights, dataset = results["weights"], results["dataset"]
    title = f"{dataset['name']} ({len(dataset['images'])} images), bgcodec: {weights['spec']}"
    if weights["random_init"]:
        title += "\nrandom-init weights, not trained"
    titles = {name: info.get("title", name) for name, info in results["settings"]["codec_settings"].items()}
    written = []
    for filename, metric, ylabel in RD_PLOTS:
        curves = [curve(titles.get(name, name), *_complete(entries, metric), **(BOLD if name == BGCODEC else
                                                                                 {"linewidth": 1.5}))
                  for name, entries in results["means"].items()]
        largest = max((c.points[-1][0] for c in curves if c.points), default=0.0)
        curves += [curve(f"{a['name']} (published)", a["bpp"], a[metric], **PUBLISHED) for a in anchors if metric in a]
        if not draw_rd_plot(out / filename, curves, ylabel, title, title_color="red" if weights["random_init"] else
                            "black", xmax=largest * 1.05 if largest > 0 else 2.0, legend_outside=bool(anchors)):
            return []
        written.append(filename)
    return written


def write_bound_plot(path: str | Path, bound: Sequence[dict], codec: Sequence[dict] | None, title: str) -> bool:
    """``bgcodec bound``'s plot: the bound model's curve dashed, the codec's solid; False
    without matplotlib."""
    curves = [curve("bound model (KL rate, estimate)", [r["bpp"] for r in bound], [r["psnr"] for r in bound],
                    linestyle="--")]
    if codec:
        curves.append(curve("bgcodec (real files)", [r["bpp"] for r in codec], [r["psnr"] for r in codec]))
    return draw_rd_plot(path, curves, "PSNR RGB (dB)", title)


def _complete(entries: list[dict], metric: str) -> tuple[list[float], list[float]]:
    complete = [e for e in entries if e["complete"]]
    return [e["bpp"] for e in complete], [e[metric] for e in complete]


def load_anchors(folder: str, add_note: Callable[[str], None]) -> list[dict]:
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
