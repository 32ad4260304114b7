"""What tiling costs: each image coded whole and in tiles, at a few λ, with the real coder.

An image larger than ``config.TILE_SIZE`` on a side is coded as independent tiles
(``container.tile_boxes``). This codes every image twice per λ, with ``--tile-size`` and
with one tile covering it all, and prints per λ the mean bpp and PSNR of both, the PSNR
of the band of pixels within ``--band`` of an inner tile border (where a seam would show)
in both codings, and the BD-rate (PSNR, PCHIP) of the tiled coding against the whole one.

    python benchmarks/tiles.py IMAGES...                        # tiles of config.TILE_SIZE
    python benchmarks/tiles.py --tile-size 512 --lambdas 0.001,0.01 IMAGES...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec.codec import Codec  # noqa: E402
from bgcodec.config import TILE_SIZE  # noqa: E402
from bgcodec.container import tile_boxes  # noqa: E402
from bgcodec.eval.bdrate import bd_rate  # noqa: E402
from bgcodec.eval.metrics import psnr  # noqa: E402
from bgcodec.imageio import load_image  # noqa: E402


def border_band(height: int, width: int, tile_size: int, band: int) -> np.ndarray:
    """The pixels within ``band`` of a border between two tiles."""
    mask = np.zeros((height, width), bool)
    for top, left, _, _ in tile_boxes(height, width, tile_size):
        if top:
            mask[max(0, top - band):top + band] = True
        if left:
            mask[:, max(0, left - band):left + band] = True
    return mask


def masked_psnr(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray) -> float:
    return psnr(original[mask][None], decoded[mask][None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped one)")
    parser.add_argument("--tile-size", type=int, default=TILE_SIZE)
    parser.add_argument("--lambdas", default="0.0005,0.002,0.008,0.032", help="λ values (CLI convention)")
    parser.add_argument("--band", type=int, default=4, help="half-width of the border band in pixels")
    args = parser.parse_args()
    codec = Codec.load(args.weights, device="cpu")
    values = [float(v) for v in args.lambdas.split(",")]
    images = [load_image(path, drop_alpha=True)[0] for path in args.images]
    tiled_images = [image for image in images if len(tile_boxes(*image.shape[:2], args.tile_size)) > 1]
    if not tiled_images:
        sys.exit(f"no image is larger than a tile of {args.tile_size}")
    rows = {"whole": [], "tiled": []}
    for lmbda in values:
        stats = {kind: [] for kind in rows}
        for image in tiled_images:
            height, width = image.shape[:2]
            band = border_band(height, width, args.tile_size, args.band)
            whole_size = max(height, width) + (-max(height, width)) % 64
            for kind, tile_size in (("whole", whole_size), ("tiled", args.tile_size)):
                data = codec.encode(image, lmbda, tile_size=tile_size)
                decoded = codec.decode(data)
                stats[kind].append((8 * len(data) / (height * width), psnr(image, decoded),
                                    masked_psnr(image, decoded, band)))
        for kind in rows:
            rows[kind].append(np.mean(stats[kind], axis=0))
    pixels = sum(image.shape[0] * image.shape[1] for image in tiled_images) / len(tiled_images)
    print(f"{len(tiled_images)} images larger than a tile ({pixels / 1e6:.2f} MP on average), tile size "
          f"{args.tile_size}, border band ±{args.band} px\n")
    print("| λ | whole bpp | whole PSNR | tiled bpp | tiled PSNR | band PSNR whole | band PSNR tiled |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for lmbda, whole, tiled in zip(values, rows["whole"], rows["tiled"]):
        print(f"| {lmbda:g} | {whole[0]:.4f} | {whole[1]:.2f} | {tiled[0]:.4f} | {tiled[1]:.2f} | "
              f"{whole[2]:.2f} | {tiled[2]:.2f} |")
    whole, tiled = np.array(rows["whole"]), np.array(rows["tiled"])
    print(f"\nBD-rate of the tiled coding against the whole one (PSNR, PCHIP): "
          f"{bd_rate(whole[:, 0], whole[:, 1], tiled[:, 0], tiled[:, 1]):+.2f} %")


if __name__ == "__main__":
    main()
