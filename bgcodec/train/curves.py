"""Mean rate–distortion curves of a model on a few images, for training validation and
``bgcodec bound``: the codec's from real bitstreams, the bound model's from its KL.

(``bgcodec eval`` is the full evaluation against the classic codecs; the plot of these
curves is bgcodec.eval.plots.write_bound_plot.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch

from .. import lambdas
from ..bound import BoundVAE
from ..codec import Codec, image_to_tensor, tensor_to_image
from ..eval.metrics import psnr as image_psnr
from ..model import BGVAE
from ..progress import Progress, no_progress
from ..weights import in_memory



def codec_curve(model: BGVAE, images: Sequence[np.ndarray], lambdas_cli: Sequence[float], synthesis: str = "full",
                progress: Progress = no_progress) -> list[dict]:
    """Encode and decode each image with the real coder; mean bpp (file sizes) and PSNR per λ."""
    codec = Codec(in_memory(copy.deepcopy(model).float().cpu().eval()), torch.device("cpu"))
    rows = []
    for lmbda in lambdas_cli:
        bpp, psnr = [], []
        for image in images:
            data = codec.encode(image, lmbda, synthesis=synthesis)
            bpp.append(8 * len(data) / (image.shape[0] * image.shape[1]))
            psnr.append(image_psnr(image, codec.decode(data)))
            progress(len(rows) * len(images) + len(bpp), len(lambdas_cli) * len(images), f"λ {lmbda:g}")
        rows.append({"lambda": lmbda, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    return rows


@torch.no_grad()
def bound_curve(model: BoundVAE, images: Sequence[np.ndarray], lambdas_cli: Sequence[float], seed: int = 0,
                progress: Progress = no_progress) -> list[dict]:
    """The bound model's estimate per λ: mean bpp = KL·log2(e) / pixels, and mean PSNR of its
    reconstruction from one posterior sample (the distortion term of the bound), on the
    images padded as the codec pads them."""
    model = copy.deepcopy(model).float().cpu().eval()
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for lmbda in lambdas_cli:
            bpp, psnr = [], []
            for image in images:
                h, w = image.shape[:2]
                x = image_to_tensor(image, torch.float32)
                out, kls = model(x, torch.tensor([lambdas.to_model(lmbda)]), sample=True)
                bpp.append(float(torch.stack(kls).sum()) * lambdas.BITS_PER_NAT / (h * w))
                psnr.append(image_psnr(image, tensor_to_image(out, h, w)))
                progress(len(rows) * len(images) + len(bpp), len(lambdas_cli) * len(images), f"λ {lmbda:g}")
            rows.append({"lambda": lmbda, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    return rows


def psnr_at(curve: Sequence[dict], bpp: float) -> float | None:
    """PSNR at ``bpp`` by linear interpolation in log-bpp; None outside the measured range."""
    points = sorted((row["bpp"], row["psnr"]) for row in curve)
    for (b0, p0), (b1, p1) in zip(points, points[1:]):
        if b0 <= bpp <= b1 and b1 > b0:
            t = (math.log(bpp) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return p0 + t * (p1 - p0)
    return None


GAP_RATES = (0.25, 0.5, 1.0)


def bound_gaps(bound: Sequence[dict], codec: Sequence[dict]) -> dict[float, float | None]:
    """PSNR of the bound minus PSNR of the codec at each of GAP_RATES (None outside either curve)."""
    gaps = {}
    for bpp in GAP_RATES:
        b, c = psnr_at(bound, bpp), psnr_at(codec, bpp)
        gaps[bpp] = None if b is None or c is None else b - c
    return gaps


def bound_table(bound: Sequence[dict], codec: Sequence[dict] | None) -> str:
    """A markdown table of both curves per λ, and the gaps at equal rate."""
    header = "| λ | bound bpp (KL) | bound PSNR |" + (" codec bpp (files) | codec PSNR |" if codec else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for i, row in enumerate(bound):
        line = f"| {row['lambda']:.4g} | {row['bpp']:.4f} | {row['psnr']:.2f} |"
        if codec:
            line += f" {codec[i]['bpp']:.4f} | {codec[i]['psnr']:.2f} |"
        lines.append(line)
    if codec:
        gaps = bound_gaps(bound, codec)
        lines += ["", "Gap (bound − codec PSNR at equal bpp): " + ", ".join(
            f"{bpp} bpp: " + ("n/a (outside a curve)" if gap is None else f"{gap:+.2f} dB") for bpp, gap in gaps.items())]
    return "\n".join(lines)
