"""What ``bgcodec eval`` writes into its --out folder: ``summary.md`` (the run, the mean
table, the Bjøntegaard deltas, the settings, notes and plots), one CSV per codec (one row
per image and setting), ``results.json`` (everything) and the plots.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..files import write_atomically
from .bdrate import BD_COLUMNS
from .codecs import BGCODEC
from .plots import RD_PLOTS, load_anchors, write_eval_plots

AddNote = Callable[[str], None]

ROW_FIELDS = ("codec", "setting", "param", "value", "image", "width", "height", "bytes", "bpp",
              "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s")


def output_names(codecs: Sequence[str]) -> list[str]:
    """The files a run with these classic codecs may write into --out."""
    return ["results.json", "summary.md", *(name for name, _, _ in RD_PLOTS)] + [
        f"{name}.csv" for name in (BGCODEC, *codecs)]


def write_outputs(results: dict, out: str, anchors: str | None, codec_names: Sequence[str], add_note: AddNote) -> None:
    """The plots, one CSV per codec, summary.md and results.json (in that order: the plots add notes)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    results["plots"] = write_eval_plots(results, folder, load_anchors(anchors, add_note) if anchors else [])
    if not results["plots"]:
        add_note("plots skipped: matplotlib is not installed (pip install 'bgcodec[eval]')")
    for name in codec_names:
        _write_csv(folder / f"{name}.csv", [r for r in results["rows"] if r["codec"] == name])
    write_atomically(folder / "summary.md", summary_markdown(results))
    write_atomically(folder / "results.json", json.dumps(_json_safe(results), indent=1, allow_nan=False) + "\n")


def _write_csv(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _csv_value(row[key]) for key in ROW_FIELDS} for row in rows)
    write_atomically(path, text.getvalue())


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
