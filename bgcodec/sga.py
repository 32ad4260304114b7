"""Iterative encoding with Stochastic Gumbel Annealing (SGA; DESIGN-NOTES §5.2).

Starting from the encoder's (amortised) residuals, the latents of all 9 blocks are
optimised jointly for the rate–distortion cost of the chosen synthesis at the file's λ.
Rounding to the quantisation grid around each prior mean is relaxed stochastically, with
a temperature annealed towards hard rounding; the result then goes through the ordinary
quantisation and entropy coding, so the decoder is unchanged. Design notes and measured
behaviour: docs/DESIGN.md.

Because the prior of each latent depends on the latents before it, every iteration runs
the whole top-down path and the synthesis, forward and backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .model import BGVAE, LatentBlock, gaussian_log_likelihood

# --effort level → SGA iterations. 0 is the plain (amortised) encoder.
EFFORT_ITERATIONS = {0: 0, 1: 50, 2: 200, 3: 800}
# Backpropagating through the top-down path and the synthesis keeps their activations:
# about 1 GiB per megapixel with the `small` weights (benchmarks/memory.py --effort 1).
MAX_PIXELS = 4 * 2**20
LEARNING_RATE = 5e-3
CHECK_EVERY = 10  # Adam, in units of the quantisation step (SGA's setting, where Δ = 1)
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


def amortised_residuals(model: BGVAE, taps: list[torch.Tensor], lmbda: torch.Tensor) -> list[torch.Tensor]:
    """The encoder's residuals (qm − pm)/Δ of every latent, with earlier latents quantised."""
    emb, log_ratio = model.condition(lmbda)
    residuals = []

    def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
        log_step = latent.log_step(log_ratio)
        h, mean, _ = latent.prior_params(h, emb, log_step)
        residual = latent.residual(h, taps[stage], emb, mean, log_step)
        residuals.append(residual)
        return latent.fuse(h, mean, torch.round(residual), log_step, emb)

    model.top_down(emb, tuple(taps[0].shape[2:]), visit)
    return residuals


def optimise_latents(model: BGVAE, image: torch.Tensor, taps: list[torch.Tensor], lmbda: torch.Tensor,
                     iterations: int, synthesis: str = "full", height: int | None = None, width: int | None = None,
                     progress: Callable[[int], None] | None = None, seed: int = 0) -> list[torch.Tensor]:
    """Residuals (in quantisation steps, relative to the prior means) refined by
    ``iterations`` steps of SGA (model convention λ, shape (1,)).

    The residuals, not the absolute latents, are the variables: when an earlier latent
    changes, the prior means of the later ones move and their residuals move with them,
    as in the decoder. ``image`` is the padded input in [0, 1]; the distortion counts its
    top-left ``height``×``width`` pixels (the real image), the rate counts every latent.
    Every ``CHECK_EVERY`` iterations, and at the end, the residuals are scored by the cost
    of their hard-quantised coding, and the best scored ones (the encoder's own included)
    are returned, so more effort never gives a worse cost. ``progress(n)`` is called
    after each iteration with the number done.
    """
    height = image.shape[2] if height is None else height
    width = image.shape[3] if width is None else width
    target = (2 * image[:, :, :height, :width] - 1).detach()
    generator = torch.Generator(device=image.device).manual_seed(seed)
    with torch.no_grad():
        emb, log_ratio = model.condition(lmbda)
        start = amortised_residuals(model, taps, lmbda)
    grid = tuple(taps[0].shape[2:])
    num_dims = 3 * height * width

    def cost(residuals: list[torch.Tensor], tau: float | None) -> torch.Tensor:
        return _cost(model, emb, log_ratio, residuals, grid, synthesis, target, lmbda, tau, generator, num_dims)

    with torch.no_grad():
        best, best_cost = start, cost(start, None).item()
    variables = [r.detach().clone().requires_grad_() for r in start]
    optimizer = torch.optim.Adam(variables, lr=LEARNING_RATE)
    for t in range(iterations):
        if t == int(0.9 * iterations):
            optimizer.param_groups[0]["lr"] = 0.1 * LEARNING_RATE
        with torch.enable_grad():
            grads = torch.autograd.grad(cost(variables, temperature(t, iterations)), variables)
        for v, g in zip(variables, grads):
            v.grad = g
        optimizer.step()
        if (t + 1) % CHECK_EVERY == 0 or t + 1 == iterations:
            with torch.no_grad():
                value = cost(variables, None).item()
            if value < best_cost:
                best, best_cost = [v.detach().clone() for v in variables], value
        if progress is not None:
            progress(t + 1)
    return best


def _cost(model: BGVAE, emb, log_ratio, residuals, grid, synthesis, target, lmbda, tau, generator,
          num_dims) -> torch.Tensor:
    """Rate (nats per sub-pixel) + λ·MSE with every latent rounded around its prior mean:
    relaxed with SGA at temperature ``tau``, or hard (as when coding) for ``tau=None``."""
    rate = []

    def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
        log_step = latent.log_step(log_ratio)
        h, mean, log_scale = latent.prior_params(h, emb, log_step)
        w = residuals[len(rate)]
        residual = torch.round(w) if tau is None else relaxed_round(w, tau, generator)
        rate.append(-gaussian_log_likelihood(residual, log_scale).sum())
        return latent.fuse(h, mean, residual, log_step, emb)

    h = model.top_down(emb, grid, visit)
    out = model.synthesize(h, lmbda, synthesis)[:, :, :target.shape[2], :target.shape[3]]
    return torch.stack(rate).sum() / num_dims + lmbda[0] * (out - target).pow(2).mean()
