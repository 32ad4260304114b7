"""Iterative encoding with Stochastic Gumbel Annealing (SGA).

The encoder's choice of every latent is refined for the rate–distortion cost of the
chosen synthesis at the file's λ. The variables are offsets, in quantisation steps, added
to the encoder's residuals ``(qm − pm)/Δ`` of every coded part of the latents. The residuals themselves are
recomputed from the current earlier latents on every pass, so a change in an early latent
is followed further down by the encoder's own answer to it, as in the plain encoder.
Rounding around each prior mean is relaxed stochastically, with a temperature annealed
towards hard rounding; the result then goes through the ordinary quantisation and entropy
coding, so the decoder is unchanged. Design notes and measurements: docs/DESIGN.md.

Every iteration runs the whole top-down path and the synthesis, forward and backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .model import BGVAE, LatentBlock, gaussian_log_likelihood
from .progress import Progress, no_progress

LEARNING_RATE = 1e-2  # Adam, in quantisation steps; SGA's 5e-3 is for 2 000+ iterations
CHECK_EVERY = 5
EPS = 1e-5


def temperature(t: int, iterations: int) -> float:
    """τ held at 0.5 for the first 10 %, then decaying exponentially to ≈ 0.13 at the end:
    both published schedules (2 000 and 3 000 iterations) end near 0.13; ours is rescaled
    to the iteration count."""
    t0 = 0.1 * iterations
    rate = 1.35 / (0.9 * iterations)
    return min(0.5, max(1e-8, 0.5 * math.exp(-rate * (t - t0))))


def relaxed_round(w: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """SGA's stochastic relaxation of round(w): a Concrete mixture of floor(w) and ceil(w)
    whose logits −atanh(distance)/τ make the nearer integer likelier, ever more so as τ → 0."""
    down, up = torch.floor(w), torch.ceil(w)
    distances = torch.stack([w - down, up - w], dim=-1).clamp(-1 + EPS, 1 - EPS)
    logits = -torch.atanh(distances) / tau
    uniform = torch.rand(logits.shape, generator=generator, device=w.device).clamp(1e-20, 1 - 1e-7)
    weights = torch.softmax((logits - torch.log(-torch.log(uniform))) / tau, dim=-1)
    return down * weights[..., 0] + up * weights[..., 1]


def optimise_latents(model: BGVAE, image: torch.Tensor, taps: list[torch.Tensor], lmbda: torch.Tensor,
                     iterations: int, synthesis: str = "full", height: int | None = None, width: int | None = None,
                     progress: Progress = no_progress, seed: int = 0) -> list[torch.Tensor]:
    """The residuals (in quantisation steps, relative to the prior means) of every coded part
    of the latents after ``iterations`` steps of SGA (model convention λ, shape (1,)).

    ``image`` is the padded input in [0, 1]; the distortion counts its top-left
    ``height``×``width`` pixels (the real image), the rate counts every latent. Every
    ``CHECK_EVERY`` iterations, and at the end, the offsets are scored by the cost of their
    hard-quantised coding; the residuals of the best scored ones (the encoder's own, at
    offset 0, included) are returned, so more effort never gives a worse cost.
    Each iteration is reported to ``progress``.
    """
    height = image.shape[2] if height is None else height
    width = image.shape[3] if width is None else width
    generator = torch.Generator(device=image.device).manual_seed(seed)
    with torch.no_grad():
        emb, log_ratio = model.condition(lmbda)
    rd = _RDCost(model, emb, log_ratio, taps, synthesis, (2 * image[:, :, :height, :width] - 1).detach(), lmbda)

    best_cost, best = rd.hard(None)
    variables = [torch.zeros_like(r).requires_grad_() for r in best]
    optimizer = torch.optim.Adam(variables, lr=LEARNING_RATE)
    for t in range(iterations):
        if t == int(0.9 * iterations):
            optimizer.param_groups[0]["lr"] = 0.1 * LEARNING_RATE
        with torch.enable_grad():
            value = rd(variables, lambda w: relaxed_round(w, temperature(t, iterations), generator))[0]
            grads = torch.autograd.grad(value, variables)
        for v, g in zip(variables, grads):
            v.grad = g
        optimizer.step()
        if (t + 1) % CHECK_EVERY == 0 or t + 1 == iterations:
            value, residuals = rd.hard(variables)
            if value < best_cost:
                best_cost, best = value, residuals
        progress(t + 1, iterations, "SGA")
    return best


class _RDCost:
    """Rate (nats per sub-pixel of the real image) + λ·MSE of the latents the encoder
    chooses with the given offsets, each rounded (hard or relaxed) around its prior mean."""

    def __init__(self, model: BGVAE, emb, log_ratio, taps, synthesis: str, target: torch.Tensor,
                 lmbda: torch.Tensor):
        self.model, self.emb, self.log_ratio, self.taps = model, emb, log_ratio, taps
        self.synthesis, self.target, self.lmbda = synthesis, target, lmbda

    def __call__(self, offsets: list[torch.Tensor] | None, rounding: Callable[[torch.Tensor], torch.Tensor]):
        """(cost, the residuals before rounding); offsets None means zeros."""
        rates, residuals = [], []

        def pick(log_scale: torch.Tensor, encoder_residual: Callable[[], torch.Tensor]) -> torch.Tensor:
            w = encoder_residual()
            if offsets is not None:
                w = w + offsets[len(residuals)]
            residuals.append(w)
            rounded = rounding(w)
            rates.append(-gaussian_log_likelihood(rounded, log_scale).sum())
            return rounded

        def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
            return latent.run(h, self.emb, self.log_ratio, self.taps[stage], pick)

        h = self.model.top_down(self.emb, tuple(self.taps[0].shape[2:]), visit)
        height, width = self.target.shape[2:]
        out = self.model.synthesize(h, self.lmbda, self.synthesis)[:, :, :height, :width]
        cost = torch.stack(rates).sum() / self.target[0].numel() + self.lmbda[0] * (out - self.target).pow(2).mean()
        return cost, residuals

    @torch.no_grad()
    def hard(self, offsets: list[torch.Tensor] | None):
        """(cost, residuals) with hard rounding, as when coding."""
        cost, residuals = self(offsets, torch.round)
        return cost.item(), [r.detach() for r in residuals]
