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
