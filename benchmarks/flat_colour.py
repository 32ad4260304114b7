"""bgcodec against AVIF on flat colour and graphics, with test images made here (no data).

Kinds of content, each at two sizes: ``patches`` (saturated flat patches with thin dark
borders, like a colour chart), ``chart`` (the same photographed: soft edges, sensor noise),
``gradients`` (smooth shading), ``soft`` (large blurred blobs, like a soft-focus background)
and ``text`` (dark text and lines on a flat background). Every image is coded by bgcodec at
a few λ and by AVIF 4:4:4 (tune=psnr, as ``bgcodec eval``) over its quality range; the
table gives, per kind, how bgcodec stored it, its bpp and PSNR, AVIF's PSNR at the same bpp
(interpolated in log-bpp on its curve), the difference, and the standard deviation of the
decoded pixels inside flat areas (the original's is 0, about 0.4 for ``chart``): the
mottled texture bgcodec paints there. Several ``--weights`` are compared in one run.

    python benchmarks/flat_colour.py                       # shipped weights
    python benchmarks/flat_colour.py --lambdas 0.002,0.01 --sizes 256 --save-dir /tmp/flat
    python benchmarks/flat_colour.py --weights A.safetensors --weights B.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec import container  # noqa: E402
from bgcodec.codec import Codec  # noqa: E402
from bgcodec.eval.codecs import AvifCodec, CodecUnavailable  # noqa: E402
from bgcodec.eval.metrics import psnr  # noqa: E402
from bgcodec.train.curves import psnr_at  # noqa: E402

SATURATED = [(200, 30, 40), (30, 160, 60), (40, 60, 200), (230, 200, 30), (220, 110, 20), (140, 40, 160),
             (20, 170, 190), (240, 240, 235), (30, 30, 35), (180, 180, 175), (250, 120, 170), (90, 60, 30)]


def patches(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A grid of flat patches with 2-pixel borders; the mask marks patch interiors."""
    image = np.full((size, size, 3), 20, np.uint8)
    flat = np.zeros((size, size), bool)
    cells = 4
    step = size // cells
    for i in range(cells):
        for j in range(cells):
            colour = SATURATED[(i * cells + j + int(rng.integers(12))) % len(SATURATED)]
            y, x = i * step + 2, j * step + 2
            image[y:y + step - 4, x:x + step - 4] = colour
            flat[y + 4:y + step - 8, x + 4:x + step - 8] = True
    return image, flat


def chart(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The patches as a camera sees them: slightly soft, with sensor noise of half a level."""
    image, flat = patches(size, rng)
    soft_edges = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.7)), dtype=float)
    return np.clip(np.round(soft_edges + rng.normal(0, 0.5, image.shape)), 0, 255).astype(np.uint8), flat


def gradients(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smooth shading in both directions, different per channel; no flat area."""
    y, x = np.mgrid[0:size, 0:size] / size
    a, b, c = rng.uniform(0.3, 1.0, 3)
    image = np.stack([40 + 180 * (a * x + (1 - a) * y), 200 - 150 * x * y * b, 60 + 150 * np.sin(2 * c * y + x)], -1)
    return np.clip(image, 0, 255).astype(np.uint8), np.zeros((size, size), bool)


def soft(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Large blurred discs on a flat background: bokeh; the mask marks the background far from them."""
    img = Image.new("RGB", (size, size), (70, 110, 150))
    draw = ImageDraw.Draw(img)
    centres = []
    for _ in range(5):
        cx, cy, r = (int(v) for v in rng.integers([0, 0, size // 12], [size, size, size // 5]))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SATURATED[int(rng.integers(len(SATURATED)))])
        centres.append((cx, cy, r))
    image = np.asarray(img.filter(ImageFilter.GaussianBlur(size / 40)))
    y, x = np.mgrid[0:size, 0:size]
    flat = np.ones((size, size), bool)
    for cx, cy, r in centres:
        flat &= (x - cx) ** 2 + (y - cy) ** 2 > (r + size / 10) ** 2
    return image, flat


def text(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Text and lines on a flat background; the mask marks background away from any ink."""
    img = Image.new("RGB", (size, size), (245, 240, 225))
    draw = ImageDraw.Draw(img)
    for row in range(size // 24):
        draw.text((6, 4 + 24 * row), "The quick brown fox 0123456789"[: int(rng.integers(12, 30))], fill=(20, 20, 30))
    for _ in range(6):
        draw.line([tuple(int(v) for v in rng.integers(0, size, 2)), tuple(int(v) for v in rng.integers(0, size, 2))],
                  fill=(200, 30, 40), width=2)
    image = np.asarray(img)
    ink = np.any(np.abs(image.astype(int) - (245, 240, 225)) > 0, axis=2)
    near_ink = np.asarray(Image.fromarray(ink).filter(ImageFilter.MaxFilter(9)))
    return image, ~near_ink


KINDS = {"patches": patches, "chart": chart, "gradients": gradients, "soft": soft, "text": text}


def flat_std(decoded: np.ndarray, image: np.ndarray, flat: np.ndarray) -> float:
    """Standard deviation of the decoded values inside flat areas, per colour (to 8 levels, which
    groups a noisy patch as one), mean over channels."""
    if not flat.any():
        return float("nan")
    values = []
    colours = image // 8
    for colour in np.unique(colours[flat].reshape(-1, 3), axis=0):
        where = flat & np.all(colours == colour, axis=2)
        if where.sum() > 64:
            values.append(decoded[where].astype(float).std(axis=0).mean())
    return float(np.mean(values)) if values else float("nan")


def avif_curve(avif: AvifCodec, image: np.ndarray, flat: np.ndarray) -> list[dict]:
    curve = []
    for q in avif.values:
        data = avif.encode(image, q)
        decoded = avif.decode(data)
        curve.append({"bpp": 8 * len(data) / (image.shape[0] * image.shape[1]), "psnr": psnr(image, decoded),
                      "std": flat_std(decoded, image, flat)})
    return curve


def measure(codec: Codec, avif_curve: list[dict], image: np.ndarray, flat: np.ndarray,
            lambdas: list[float]) -> list[dict]:
    pixels = image.shape[0] * image.shape[1]
    rows = []
    for lmbda in lambdas:
        data = codec.encode(image, lmbda)
        decoded = codec.decode(data)
        bpp = 8 * len(data) / pixels
        rows.append({"bpp": bpp, "psnr": psnr(image, decoded), "avif_psnr": psnr_at(avif_curve, bpp),
                     "coding": container.coding(container.unpack(data)[0]),
                     "std": flat_std(decoded, image, flat),
                     "avif_std": _nearest(avif_curve, bpp)["std"]})
    return rows


def _nearest(curve: list[dict], bpp: float) -> dict:
    return min(curve, key=lambda row: abs(np.log(row["bpp"]) - np.log(bpp)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", action="append", default=None, help="weights file; repeat to compare")
    parser.add_argument("--lambdas", default="0.0005,0.002,0.01", help="bgcodec λ values, comma-separated")
    parser.add_argument("--sizes", default="256,512", help="image sides, comma-separated")
    parser.add_argument("--save-dir", type=Path, default=None, help="also write the test images here as PNG")
    args = parser.parse_args()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    codecs = {Path(w).stem if w else "shipped": Codec.load(w, device="cpu") for w in args.weights or [None]}
    avif = AvifCodec()
    try:
        avif.prepare()
    except CodecUnavailable as exc:
        sys.exit(f"AVIF is not available: {exc}")
    print(f"bgcodec at λ {args.lambdas} against AVIF 4:4:4 (tune=psnr); flat-area σ: the original's is 0\n")
    print("| weights | kind | size | stored | bpp | bgcodec PSNR | AVIF PSNR at that bpp | Δ (dB) | flat σ bgcodec | "
          "flat σ AVIF |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, make in KINDS.items():
        for size in (int(v) for v in args.sizes.split(",")):
            image, flat = make(size, np.random.default_rng(size))
            if args.save_dir:
                args.save_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(args.save_dir / f"{name}-{size}.png")
            curve = avif_curve(avif, image, flat)
            for label, codec in codecs.items():
                for row in measure(codec, curve, image, flat, lambdas):
                    avif_psnr = row["avif_psnr"]
                    delta = "n/a" if avif_psnr is None else f"{row['psnr'] - avif_psnr:+.2f}"
                    print(f"| {label} | {name} | {size} | {row['coding']} | {row['bpp']:.3f} | {row['psnr']:.2f} | "
                          f"{'n/a' if avif_psnr is None else f'{avif_psnr:.2f}'} | {delta} | {row['std']:.2f} | "
                          f"{row['avif_std']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
