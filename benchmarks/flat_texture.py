"""Where the texture on flat colour comes from: constant and smoothly shaded images, coded
by the learned path (no lossless fallback) at several λ, and the error of each decode
split by the pixel grids it locks to.

Per image and λ the table gives the bpp, the standard deviation of the error (decoded −
original, levels, mean over channels) and which share of the error's energy (DC excluded)
lies on the frequencies of a pattern that repeats every 4, 8 or 16 pixels in both
directions (each share excludes the finer grids'). White noise puts 1/16 − 1/65536 of its
energy on the 4-pixel grid, 3/64 on 8 and 3/256 on 16; a fixed pattern of the ×4 head
shows on the 4-pixel grid, the latent strides on 8 and 16. Several ``--weights`` are
compared in one run.

    python benchmarks/flat_texture.py                                   # shipped weights
    python benchmarks/flat_texture.py --weights A.safetensors --weights B.safetensors --save-dir /tmp/tex
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

SIZE = 256
GRIDS = (4, 8, 16)


def test_images() -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    shading = np.stack([60 + 150 * x, 90 + 100 * y, 200 - 120 * (x + y) / 2], -1)
    flat = {"gray": (128, 128, 128), "red": (200, 30, 40), "sky": (90, 150, 220), "dark": (30, 30, 35)}
    images = {name: np.broadcast_to(np.uint8(colour), (SIZE, SIZE, 3)).copy() for name, colour in flat.items()}
    images["shading"] = np.round(shading).astype(np.uint8)
    return images


def grid_shares(error: np.ndarray) -> list[float]:
    """Share of the error's AC energy on the 4-, 8- and 16-pixel grids (see the module doc)."""
    power = (np.abs(np.fft.fft2(error - error.mean(axis=(0, 1)), axes=(0, 1))) ** 2).sum(axis=2)
    power[0, 0] = 0
    total = power.sum() or 1.0
    k = np.arange(SIZE)
    shares, finer = [], np.zeros((SIZE, SIZE), bool)
    for grid in GRIDS:
        on = k % (SIZE // grid) == 0
        mask = on[:, None] & on[None, :] & ~finer
        shares.append(float(power[mask].sum() / total))
        finer |= mask
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", action="append", default=None, help="weights file; repeat to compare")
    parser.add_argument("--lambdas", default="0.0005,0.002,0.01,0.05", help="λ values, comma-separated")
    parser.add_argument("--save-dir", type=Path, default=None, help="also write each decode as PNG")
    args = parser.parse_args()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    print("| weights | image | λ | bpp | error σ | on 4-px grid | on 8-px grid | on 16-px grid |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for weights in args.weights or [None]:
        codec = Codec.load(weights, device="cpu")
        label = Path(weights).stem if weights else "shipped"
        for name, image in test_images().items():
            for lmbda in lambdas:
                data = codec.encode(image, lmbda, lossless_fallback=False)
                decoded = codec.decode(data)
                error = decoded.astype(float) - image
                shares = " | ".join(f"{100 * s:.1f} %" for s in grid_shares(error))
                print(f"| {label} | {name} | {lmbda:g} | {8 * len(data) / SIZE ** 2:.4f} | "
                      f"{error.std(axis=(0, 1)).mean():.2f} | {shares} |", flush=True)
                if args.save_dir:
                    args.save_dir.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(decoded).save(args.save_dir / f"{label}-{name}-{lmbda:g}.png")


if __name__ == "__main__":
    main()
