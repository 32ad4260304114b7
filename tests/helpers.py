"""Shared test helpers (importable because pytest puts tests/ on sys.path)."""

import torch

from bgcodec.model import BGVAE


def perturb(model: BGVAE, posterior_gain: float = 5.0) -> BGVAE:
    """Move a random-init model far from the identity (its layer scales start at 1e-6,
    which makes the network nearly linear and almost every residual 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.fill_(0.5)
            elif name.endswith("dc_scale"):
                p.fill_(0.3)
            elif name.endswith("hc_scale"):
                p.fill_(-0.2)
            elif name.endswith("posterior.weight"):
                p.mul_(posterior_gain)
    return model


def encode_latents(model: BGVAE, taps, lmbda):
    """The encoder's own integer residuals and the prior's ln(σ/Δ) of every latent, as numpy
    arrays, and the synthesis input: BGVAE.encode_latents with plain rounding."""
    symbols, log_scales = [], []

    def choose(i, log_scale, encoder_residual):
        k = torch.round(encoder_residual())
        symbols.append(k.numpy().astype("int64"))
        log_scales.append(log_scale.numpy())
        return k

    h = model.encode_latents(taps, lmbda, choose)
    return symbols, log_scales, h
