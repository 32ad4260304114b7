"""The rate–distortion bound model: BG-VAE's teacher.

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

from .layers import conv
from .config import BGVAEConfig
from .model import PAD_MULTIPLE, HierarchicalVAE, LatentBlock

UNIFORM_LOG_SCALE = -0.5 * math.log(12)
"""ln(σ/Δ) of the codec's training noise U(−Δ/2, Δ/2)."""
MIN_LOG_SCALE = -7.0


def gaussian_kl(residual: torch.Tensor, q_log_scale: torch.Tensor, p_log_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(μq, σq²) ‖ N(μp, σp²)) in nats, elementwise, from (μq − μp)/Δ, ln(σq/Δ) and
    ln(σp/Δ): the KL does not depend on the unit Δ."""
    variance_ratio = torch.exp(2 * (q_log_scale - p_log_scale))
    return p_log_scale - q_log_scale + 0.5 * (variance_ratio + residual ** 2 * torch.exp(-2 * p_log_scale)) - 0.5


class GaussianLatentBlock(LatentBlock):
    """A latent block of the bound model: the codec's block with a Gaussian posterior
    N(μq, σq²) instead of a quantised one, and the KL as its rate.

    Means and scales are in units of the block's λ-dependent step Δ, as in the codec, so
    a codec's weights are a good start. The posterior is never wider than the prior:
    ``ln σq = ln σp − softplus(ln σp − ln(Δ/√12) + a)`` with ``a`` from the conv; at a = 0
    (the scale half of the conv starts at zero) σq is a smooth minimum of σp and Δ/√12,
    the codec's training noise, so channels the codec leaves unused start with q ≈ p and
    little rate (at most 0.14 nats per element, at the prior's floor σp = 0.1·Δ).
    """

    def __init__(self, width: int, channels: int, tap_width: int, kernel: int, mlp_ratio: float):
        super().__init__(width, channels, tap_width, kernel, mlp_ratio)
        self.posterior = conv(width, 2 * channels, 3)
        with torch.no_grad():
            self.posterior.weight[channels:].zero_()

    def forward(self, h: torch.Tensor, tap: torch.Tensor, emb: torch.Tensor, log_lambda_ratio: torch.Tensor,
                sample: bool):
        """Returns the fused top-down feature and the KL of each image in nats, shape (B,)."""
        prior = self.predict(h, emb, log_lambda_ratio)
        q_mean, q_raw = self.posterior_branch(prior, tap, emb).chunk(2, dim=1)
        residual = (q_mean - prior.mean) * torch.exp(-prior.log_step)
        p_log_scale = prior.log_scale.float()
        q_log_scale = p_log_scale - F.softplus(p_log_scale - UNIFORM_LOG_SCALE + q_raw.float())
        q_log_scale = q_log_scale.clamp_min(MIN_LOG_SCALE)
        kl = gaussian_kl(residual.float(), q_log_scale, p_log_scale).sum(dim=(1, 2, 3))
        if sample:
            residual = residual + torch.exp(q_log_scale).to(residual.dtype) * torch.randn_like(residual)
        return self.fuse(prior, residual, emb), kl


class BoundVAE(HierarchicalVAE):
    """The bound model. ``forward`` has the codec's training contract (reconstruction in
    [-1, 1] and the rate of each latent in nats), so the same objective trains both."""

    kind = "bound"

    def __init__(self, cfg: BGVAEConfig):
        super().__init__(cfg, lambda stage: GaussianLatentBlock)

    def forward(self, im: torch.Tensor, lmbda: torch.Tensor, sample: bool | None = None):
        """``sample`` (default: ``self.training``) draws z from the posterior; otherwise z = μq."""
        sample = self.training if sample is None else sample
        emb, log_ratio = self.condition(lmbda)
        taps = self.encoder(self.preprocess(im), emb)
        kls = []

        def visit(stage: int, latent: GaussianLatentBlock, h: torch.Tensor) -> torch.Tensor:
            h, kl = latent(h, taps[stage], emb, log_ratio, sample)
            kls.append(kl)
            return h

        grid = (im.shape[2] // PAD_MULTIPLE, im.shape[3] // PAD_MULTIPLE)
        return self.synthesis(self.top_down(emb, grid, visit), emb), kls
