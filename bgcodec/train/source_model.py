"""The information-theoretic regulariser: the conditional source entropy H(X | X̂) as a
training term ("An Information-Theoretic Regularizer for Lossy Neural Image Compression").

For a deterministic codec the latent entropy is H(X) − H(X | X̂) + H(Ŷ | X̂), so at a fixed
distortion a lower rate goes with a higher H(X | X̂). A source model q_φ(x | x̂) estimates it,
fitted by maximum likelihood on the detached reconstruction; the codec then minimises
R + λD − α·Ĥ_φ(X | X̂) with q_φ frozen, so that the gradient reaches the codec through x̂ only.

q_φ is a discretised Gaussian per sub-pixel (bins of one level on the 0..255 scale) whose
mean and scale come from x̂ and ln λ through a small convolutional net: BG-VAE has no single
x̂ → prior map to mirror, and a per-pixel head is the analogue of its per-latent Gaussian
priors. It lives in the training checkpoint only; the exported weights never hold it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..model import gaussian_log_likelihood

BIN = 2 / 255
"""One level of 8-bit pixels on the model's [-1, 1] scale."""
LOG_SCALE_FLOOR = math.log(0.05)
"""ln σ in levels: below this a bin holds all the mass anyway."""


class SourceModel(nn.Module):
    """q_φ(x | x̂, λ): a per-sub-pixel discretised Gaussian (see the module doc)."""

    def __init__(self, lmbda_range: tuple[float, float], hidden: int = 16):
        super().__init__()
        self.log_lo, self.log_hi = (math.log(v) for v in lmbda_range)
        self.net = nn.Sequential(nn.Conv2d(4, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, 6, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
        """−ln q(x | x̂) in nats per sub-pixel, per image; x and x̂ on the [-1, 1] scale."""
        position = (lmbda.log() - self.log_lo) / (self.log_hi - self.log_lo) * 2 - 1
        level = position.view(-1, 1, 1, 1).expand(-1, 1, *x_hat.shape[2:]).to(x_hat.dtype)
        shift, log_scale = self.net(torch.cat([x_hat, level], 1)).chunk(2, dim=1)
        residual = (x - x_hat - BIN * shift) / BIN
        nats = -gaussian_log_likelihood(residual, log_scale.clamp_min(LOG_SCALE_FLOOR))
        return nats.mean(dim=(1, 2, 3))


class SourceRegulariser:
    """The two-step alternation of one training step: fit q_φ on the detached x̂, then the
    codec's term −α·Ĥ_φ(X | X̂) with q_φ frozen."""

    def __init__(self, model: SourceModel, weight: float, lr: float):
        self.model, self.weight = model, weight
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def fit(self, x: torch.Tensor, x_hat: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
        """One maximum-likelihood step of q_φ; returns the batch mean of −ln q before it."""
        self.model.requires_grad_(True)
        nats = self.model(x, x_hat.detach(), lmbda).mean()
        self.optimizer.zero_grad(set_to_none=True)
        nats.backward()
        self.optimizer.step()
        return nats.detach()

    def penalty(self, x: torch.Tensor, x_hat: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
        """−α·Ĥ_φ(X | X̂) in nats per sub-pixel (the unit of the rate in the loss), with
        gradients to x̂ only."""
        self.model.requires_grad_(False)
        return -self.weight * self.model(x, x_hat, lmbda).mean()

    def term(self, out: torch.Tensor, rates: list[torch.Tensor], im: torch.Tensor,
             lmbda: torch.Tensor) -> dict[str, torch.Tensor]:
        """After a training forward pass: fit q_φ, then the codec's ``penalty`` and
        ``source_bpp``, the estimate of H(X | X̂) in bits per pixel before the fit (to log)."""
        x, x_hat = 2 * im.float() - 1, out.float()
        nats = self.fit(x, x_hat, lmbda)
        return {"penalty": self.penalty(x, x_hat, lmbda), "source_bpp": nats * 3 / math.log(2)}
