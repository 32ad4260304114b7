"""Crops of the flattest part of a photo as bgcodec decodes it, for looking at texture and
grids in flat areas.

Finds the window of the original with the least detail (lowest standard deviation of its
luma, searched on a 16-pixel grid), codes the whole image at one quality with each
``--weights``, and writes original | decode | decode ... side by side at 4× zoom (nearest
neighbour, so every decoded pixel shows). Prints each file's size, the image's PSNR and
the error's standard deviation inside the window.

    python benchmarks/flat_crops.py kodim23.png -q 50 --weights A.safetensors --weights B.safetensors -o crop.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec.codec import Codec  # noqa: E402
from bgcodec.config import lambda_range  # noqa: E402
from bgcodec.lambdas import quality_to_lambda  # noqa: E402

ZOOM, GAP, STEP = 4, 16, 16


def flattest_window(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``² window whose luma varies least."""
    luma = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    corners = [(y, x) for y in range(0, image.shape[0] - size + 1, STEP)
               for x in range(0, image.shape[1] - size + 1, STEP)]
    return min(corners, key=lambda c: luma[c[0]:c[0] + size, c[1]:c[1] + size].std())


def side_by_side(crops: list[np.ndarray]) -> Image.Image:
    zoomed = [np.kron(c, np.ones((ZOOM, ZOOM, 1), np.uint8)) for c in crops]
    height, width = zoomed[0].shape[:2]
    canvas = np.full((height, len(zoomed) * (width + GAP) - GAP, 3), 255, np.uint8)
    for i, z in enumerate(zoomed):
        canvas[:, i * (width + GAP):i * (width + GAP) + width] = z
    return Image.fromarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("-q", "--quality", type=float, required=True, help="bgcodec quality 1..100")
    parser.add_argument("--weights", action="append", required=True, help="weights file; repeat to compare")
    parser.add_argument("--window", type=int, default=96, help="side of the crop in pixels")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    original = np.asarray(Image.open(args.image).convert("RGB"))
    y, x = flattest_window(original, args.window)
    window = (slice(y, y + args.window), slice(x, x + args.window))
    crops = [original[window]]
    print(f"{args.image.name}: window {args.window}² at x={x}, y={y}, quality {args.quality:g}")
    print("| weights | bytes | PSNR (dB) | error σ in window |")
    print("|---|---:|---:|---:|")
    for weights in args.weights:
        codec = Codec.load(weights, device="cpu")
        data = codec.encode(original, quality_to_lambda(args.quality, lambda_range(weights)))
        decoded = codec.decode(data)
        mse = np.mean((decoded.astype(float) - original) ** 2)
        error = decoded[window].astype(float) - original[window]
        print(f"| {Path(weights).stem} | {len(data)} | {10 * np.log10(255 ** 2 / mse):.2f} | "
              f"{error.std(axis=(0, 1)).mean():.2f} |", flush=True)
        crops.append(decoded[window])
    side_by_side(crops).save(args.output)


if __name__ == "__main__":
    main()
