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

Two guards keep the alternation stable. Against a frozen q_φ the codec gains by moving x̂
away from x, with a pull that grows as q_φ's scale shrinks, so (1) the likelihood is
floored at 1e-9 per sub-pixel, as CompressAI floors its latent likelihoods: Ĥ is bounded
and an error far past q_φ's scale gets no pull; (2) q_φ starts at a scale of ``INITIAL_SCALE`` levels,
above the codec's errors, where the pull is weak, and learns down to them; (3) the weight
rises from 0 to α over q_φ's first ``FIT_WARMUP`` fits. Started at a scale of one level
with neither guard, the codec's PSNR fell below 10 dB within 100 steps.
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
LOG_LIKELIHOOD_FLOOR = math.log(1e-9)
"""Per sub-pixel: bounds −ln q at 20.7 nats."""
INITIAL_SCALE = 16.0
"""q_φ's σ in levels before it is fitted."""
FIT_WARMUP = 500
"""Fits of q_φ over which the codec's weight rises from 0 to α."""


class SourceModel(nn.Module):
    """q_φ(x | x̂, λ): a per-sub-pixel discretised Gaussian (see the module doc)."""

    def __init__(self, lmbda_range: tuple[float, float], hidden: int = 16):
        super().__init__()
        self.log_lo, self.log_hi = (math.log(v) for v in lmbda_range)
        self.net = nn.Sequential(nn.Conv2d(4, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, 6, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        nn.init.constant_(self.net[-1].bias[3:], math.log(INITIAL_SCALE))  # the log-scale half

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
        """−ln q(x | x̂) in nats per sub-pixel, per image; x and x̂ on the [-1, 1] scale."""
        position = (lmbda.log() - self.log_lo) / (self.log_hi - self.log_lo) * 2 - 1
        level = position.view(-1, 1, 1, 1).expand(-1, 1, *x_hat.shape[2:]).to(x_hat.dtype)
        shift, log_scale = self.net(torch.cat([x_hat, level], 1)).chunk(2, dim=1)
        residual = (x - x_hat - BIN * shift) / BIN
        log_q = gaussian_log_likelihood(residual, log_scale.clamp_min(LOG_SCALE_FLOOR))
        return -log_q.clamp_min(LOG_LIKELIHOOD_FLOOR).mean(dim=(1, 2, 3))


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

    def fits(self) -> int:
        """How many steps q_φ has been fitted (its optimiser's count: a resumed run goes on)."""
        state = self.optimizer.state.get(next(self.model.parameters()), {})
        return int(state["step"]) if "step" in state else 0

    def penalty(self, x: torch.Tensor, x_hat: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
        """−α·Ĥ_φ(X | X̂) in nats per sub-pixel (the unit of the rate in the loss), with
        gradients to x̂ only; α ramped over the first FIT_WARMUP fits."""
        self.model.requires_grad_(False)
        weight = self.weight * min(1.0, self.fits() / FIT_WARMUP)
        return -weight * self.model(x, x_hat, lmbda).mean()

    def term(self, out: torch.Tensor, rates: list[torch.Tensor], im: torch.Tensor,
             lmbda: torch.Tensor) -> dict[str, torch.Tensor]:
        """After a training forward pass: fit q_φ, then the codec's ``penalty`` and
        ``source_bpp``, the estimate of H(X | X̂) in bits per pixel before the fit (to log)."""
        x, x_hat = 2 * im.float() - 1, out.float()
        nats = self.fit(x, x_hat, lmbda)
        return {"penalty": self.penalty(x, x_hat, lmbda), "source_bpp": nats * 3 / math.log(2)}
