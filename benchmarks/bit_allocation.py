"""Where the bits go: each latent stage's share of the rate, per λ.

For each λ, runs the model's quantised forward pass (the rates the coder would spend,
from the discretised-Gaussian likelihoods, without writing a bitstream) on every image and
prints the mean bpp, PSNR and bpp per latent stage (strides 64, 32, 16, 8). With
--noisy it also prints the same figures under training's uniform noise, the rate the
optimiser sees, so the gap between training and coding can be read per λ. --split 8 adds
the share of each latent within the stride-8 stage (in coding order).

    python benchmarks/bit_allocation.py --limit 4 --split 8
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgcodec import lambdas  # noqa: E402
from bgcodec.codec import image_to_tensor, tensor_to_image  # noqa: E402
from bgcodec.eval.run import default_lambdas  # noqa: E402
from bgcodec.eval.metrics import psnr  # noqa: E402
from bgcodec.weights import load_model  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "kodak"
STRIDES = (64, 32, 16, 8)


def latent_rates(model, image: np.ndarray, lmbda_model: float, noisy: bool) -> tuple[list[list[float]], float]:
    """Bits per pixel of each latent, grouped by stage, and the PSNR of the full synthesis."""
    x = image_to_tensor(image, torch.float32)
    with torch.no_grad():
        out, rates = model(x, torch.tensor([lmbda_model]), noisy=noisy)
    pixels = image.shape[0] * image.shape[1]
    bits = [r.item() / math.log(2) / pixels for r in rates]
    per_stage, start = [], 0
    for count in model.cfg.latents_per_stage:
        per_stage.append(bits[start:start + count])
        start += count
    return per_stage, psnr(image, tensor_to_image(out, *image.shape[:2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="?", default=str(DEFAULT_IMAGES), help="folder of PNG images")
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped one)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--lambdas", type=int, default=8, help="number of λ, log-spaced over the range")
    parser.add_argument("--noisy", action="store_true", help="also show the rates under uniform noise")
    parser.add_argument("--split", type=int, choices=STRIDES, default=None,
                        help="also show each latent's share within the stage of this stride")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    loaded = load_model(args.weights)
    model = loaded.model.float().eval()
    paths = sorted(Path(args.images).glob("*.png"))[:args.limit]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    print(f"Bits per latent stage, {len(images)} image(s) from {args.images}, model {loaded.identity.hex()}\n")
    split = None if args.split is None else STRIDES.index(args.split)
    columns = [f"stride {s}" for s in STRIDES]
    if split is not None:
        columns += [f"{args.split}: latent {i} ({c} ch)" for i, c in enumerate(model.cfg.stage_channels(split))]
    print("| λ | rate | bpp | PSNR (dB) | " + " | ".join(columns) + " |")
    print("|---:|---|---:|---:|" + "---:|" * len(columns))
    for lmbda in default_lambdas(loaded.lambda_range, args.lambdas):
        for noisy in (False, True) if args.noisy else (False,):
            results = [latent_rates(model, im, lambdas.to_model(lmbda), noisy) for im in images]
            stages = np.mean([[sum(stage) for stage in r[0]] for r in results], axis=0)
            total = float(stages.sum())
            shares = " | ".join(f"{v:.3f} ({100 * v / total:.0f} %)" for v in stages)
            if split is not None:
                within = np.mean([r[0][split] for r in results], axis=0)
                shares += " | " + " | ".join(f"{v:.3f} ({100 * v / within.sum():.0f} %)" for v in within)
            print(f"| {lmbda:.4g} | {'noise' if noisy else 'rounded'} | {total:.3f} | "
                  f"{statistics.fmean(r[1] for r in results):.2f} | {shares} |", flush=True)


if __name__ == "__main__":
    main()
