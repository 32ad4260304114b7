"""Shallow synthesis and SGA encoder effort: rate–distortion and encode time.

For each synthesis (full, shallow) and --effort level, encodes every image at each λ with
the real coder, decodes it, and prints the mean bpp / PSNR per λ, the BD-rate (PSNR,
PCHIP) against the default encode (full synthesis, effort 0) and the mean encode time per
image, then each curve's PSNR at 0.25 / 0.5 / 0.75 / 1 bpp (log-bpp interpolation). SGA is
slow on a CPU: use --limit and --crop for a quick look, --lambda-values to spend the time
where you need it.

    python benchmarks/effort.py --limit 4 --crop 256 --efforts 0,1
    python benchmarks/effort.py --syntheses full --lambda-values 0.002,0.005,0.012,0.03
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec.bdrate import BDError, bd_rate  # noqa: E402
from bgcodec.codec import Codec  # noqa: E402
from bgcodec.train.curves import psnr_at  # noqa: E402
from bgcodec.eval.run import default_lambdas  # noqa: E402
from bgcodec.eval.metrics import psnr  # noqa: E402
from bgcodec.config import EFFORT_ITERATIONS  # noqa: E402
from bgcodec.eval.system import cpu_model  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "kodak"
TABLE_RATES = (0.25, 0.5, 0.75, 1.0)


def load(path: Path, crop: int | None) -> np.ndarray:
    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
    if crop:
        h, w = image.shape[:2]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        image = image[top:top + crop, left:left + crop]
    return np.ascontiguousarray(image)


def measure(codec: Codec, images: list[np.ndarray], lambdas: list[float], synthesis: str, effort: int):
    """Mean bpp and PSNR per λ, and the mean encode time per image."""
    curve, times = [], []
    for lmbda in lambdas:
        bpp, quality = [], []
        for image in images:
            start = time.perf_counter()
            data = codec.encode(image, lmbda, synthesis=synthesis, effort=effort)
            times.append(time.perf_counter() - start)
            decoded = codec.decode(data)
            bpp.append(8 * len(data) / (image.shape[0] * image.shape[1]))
            quality.append(psnr(image, decoded))
        curve.append((statistics.fmean(bpp), statistics.fmean(quality)))
    return curve, statistics.fmean(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights file (default: bgcodec's)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--crop", type=int, default=None, help="centre crops of this size")
    parser.add_argument("--lambdas", type=int, default=4, help="number of λ values across the weights' range")
    parser.add_argument("--lambda-values", default=None, help="comma-separated λ values (instead of --lambdas)")
    parser.add_argument("--efforts", default="0,1", help="comma-separated effort levels")
    parser.add_argument("--syntheses", default="full,shallow")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for SGA (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() == ".png")[: args.limit]
    images = [load(p, args.crop) for p in paths]
    codec = Codec.load(args.weights, "cpu")
    if args.lambda_values:
        lambdas = [float(v) for v in args.lambda_values.split(",")]
    else:
        lambdas = default_lambdas(codec.lambda_range, args.lambdas)
    efforts = [int(e) for e in args.efforts.split(",")]
    syntheses = args.syntheses.split(",")
    print(f"{len(images)} images from {args.images} ({'centre ' + str(args.crop) + '² crops' if args.crop else 'whole'}),"
          f" λ = {', '.join(f'{v:.4g}' for v in lambdas)}; {torch.get_num_threads()} threads of {cpu_model()}\n")

    results = {}
    for synthesis in syntheses:
        for effort in efforts:
            results[synthesis, effort] = measure(codec, images, lambdas, synthesis, effort)
            curve, t = results[synthesis, effort]
            points = "; ".join(f"{b:.3f} bpp {q:.2f} dB" for b, q in curve)
            print(f"{synthesis:7s} effort {effort} ({EFFORT_ITERATIONS[effort]:4d} it): {points}; "
                  f"encode {t:.2f} s/image", flush=True)

    anchor = results[("full", 0)][0] if ("full", 0) in results else None
    print("\n| synthesis | effort (iterations) | BD-rate vs full, effort 0 | encode s/image |")
    print("|---|---|---:|---:|")
    for (synthesis, effort), (curve, t) in results.items():
        bd = "—"
        if anchor is not None and (synthesis, effort) != ("full", 0):
            try:
                bd = f"{bd_rate(*zip(*anchor), *zip(*curve)):+.1f} %"
            except BDError as exc:
                bd = str(exc)
        print(f"| {synthesis} | {effort} ({EFFORT_ITERATIONS[effort]}) | {bd} | {t:.2f} |")
    print_rate_table(results)
    return 0


def print_rate_table(results: dict) -> None:
    """PSNR of each curve at TABLE_RATES; '—' outside the measured rates."""
    print("\n| synthesis | effort | " + " | ".join(f"PSNR at {r} bpp" for r in TABLE_RATES) + " |")
    print("|---|---|" + "---:|" * len(TABLE_RATES))
    for (synthesis, effort), (curve, _) in results.items():
        rows = [{"bpp": b, "psnr": q} for b, q in curve]
        cells = [psnr_at(rows, rate) for rate in TABLE_RATES]
        print(f"| {synthesis} | {effort} | " + " | ".join("—" if c is None else f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
