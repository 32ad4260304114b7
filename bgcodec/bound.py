"""The rate–distortion bound model: BG-VAE's teacher (DESIGN-NOTES §3.1).

The same architecture as the codec (bgcodec.model), with Gaussian posteriors and priors
instead of quantised latents: ``z = μq + σq·ε`` and the rate is KL(q‖p), which is not
achievable by any real coder but estimates an upper bound of the information
rate–distortion function of the images. It serves as the frozen teacher of guided
training (bgcodec.guidance) and shows, measured, the headroom of the practical codec.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import PAD_MULTIPLE, BGVAEConfig, HierarchicalVAE, LatentBlock
from .layers import conv

LN2 = math.log(2)
LOG2E = math.log2(math.e)
MIN_SIGMA = 1e-5


def linsqrt(t: torch.Tensor) -> torch.Tensor:
    """sign(t)·|t|^(1 − ½·tanh|t|): linear near 0, growing like √|t| far from it, so the
    means cannot run away (the reference bound model's mean activation)."""
    a = t.abs().clamp_min(1e-8)
    near = torch.exp((1 - 0.5 * torch.tanh(a)) * torch.log(a))
    far = torch.sqrt(a)
    return torch.sign(t) * torch.where(a <= 6, near, far)


def gaussian_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv output (2·C channels) → mean (through linsqrt) and σ = log2(1 + 2^a)."""
    mean, a = raw.float().chunk(2, dim=1)
    return linsqrt(mean), F.softplus(a, beta=LN2, threshold=12).clamp_min(MIN_SIGMA)


def gaussian_kl(q_mean, q_sigma, p_mean, p_sigma) -> torch.Tensor:
    """KL(N(q_mean, q_sigma²) ‖ N(p_mean, p_sigma²)) in nats, elementwise."""
    return (torch.log(p_sigma) - torch.log(q_sigma)
            + (q_sigma ** 2 + (q_mean - p_mean) ** 2) / (2 * p_sigma ** 2) - 0.5)


class GaussianLatentBlock(LatentBlock):
    """A latent block of the bound model: the codec's block with a posterior scale and no
    quantisation step."""

    def __init__(self, width: int, channels: int, tap_width: int, kernel: int, mlp_ratio: float):
        super().__init__(width, channels, tap_width, kernel, mlp_ratio)
        self.posterior = conv(width, 2 * channels, 3)
        del self.step_offset, self.step_slope

    def forward(self, h: torch.Tensor, tap: torch.Tensor, emb: torch.Tensor, sample: bool):
        """Returns the fused top-down feature and the KL of each image in nats, shape (B,)."""
        h = self.front(h, emb)
        p_mean, p_sigma = gaussian_params(self.prior(h))
        q_mean, q_sigma = gaussian_params(self.posterior_branch(h, tap, emb))
        z = q_mean + q_sigma * torch.randn_like(q_mean) if sample else q_mean
        kl = gaussian_kl(q_mean, q_sigma, p_mean, p_sigma).sum(dim=(1, 2, 3))
        return self.end(h + self.latent_proj(z.to(h.dtype)), emb), kl


class BoundVAE(HierarchicalVAE):
    """The bound model. ``forward`` has the codec's training contract (reconstruction in
    [-1, 1] and the rate of each latent in nats), so the same objective trains both."""

    kind = "bound"

    def __init__(self, cfg: BGVAEConfig):
        super().__init__(cfg, GaussianLatentBlock)

    def forward(self, im: torch.Tensor, lmbda: torch.Tensor, sample: bool | None = None):
        """``sample`` (default: ``self.training``) draws z from the posterior; otherwise z = μq."""
        sample = self.training if sample is None else sample
        emb, _ = self.condition(lmbda)
        taps = self.encoder(self.preprocess(im), emb)
        kls = []

        def visit(stage: int, latent: GaussianLatentBlock, h: torch.Tensor) -> torch.Tensor:
            h, kl = latent(h, taps[stage], emb, sample)
            kls.append(kl)
            return h

        grid = (im.shape[2] // PAD_MULTIPLE, im.shape[3] // PAD_MULTIPLE)
        return self.synthesis(self.top_down(emb, grid, visit), emb), kls
