"""The causal-context-adjustment (CCA) loss carried over to the hierarchy ("Causal Context
Adjustment Loss for Learned Image Compression").

Within a stage the latents are coded one after another, each with a prior that sees the
ones before it through the top-down feature. For each latent i that has a predecessor in its
stage, an auxiliary prior predicts it from the feature *before* latent i−1 was fused in: it
sees everything the main prior sees except latent i−1. The term α·(R_main(z_i) − R_aux(z_i))
then rewards latents whose predecessor makes them cheap: the encoder learns to put into the
earlier latents what predicts the later ones.

Unlike the published code, the auxiliary priors are fitted on their own likelihood with
detached inputs, and the term is applied with them frozen, so they never learn to predict
worse; only the encoder, the priors and the top-down path follow its gradient. A frozen
auxiliary prior can still be fooled without bound (the codec moves its input until it
predicts absurdly), so each latent's reward R_aux − R_main is capped at the rate of its
predecessor: latent i−1 cannot tell more about latent i than the bits it holds itself. The
auxiliary priors start as copies of the main prior of their latent, live in the training
checkpoint only and are never exported.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..model import BGVAE, LOG_SIGMA_FLOOR, gaussian_log_likelihood


class AuxiliaryPrior(nn.Module):
    """The prior of one latent computed from the feature before its predecessor."""

    def __init__(self, latent: nn.Module):
        super().__init__()
        self.front = copy.deepcopy(latent.front)
        self.prior = copy.deepcopy(latent.prior)

    def rate(self, h_before: torch.Tensor, emb: torch.Tensor, z: torch.Tensor, log_step: torch.Tensor) -> torch.Tensor:
        """−ln P_aux(z) in nats per image, with the latent's quantisation step."""
        mean, raw = self.prior(self.front(h_before, emb)).chunk(2, dim=1)
        log_scale = F.softplus(raw - log_step - LOG_SIGMA_FLOOR) + LOG_SIGMA_FLOOR
        return -gaussian_log_likelihood((z - mean) * torch.exp(-log_step), log_scale).sum(dim=(1, 2, 3))


class _AuxiliaryCase(NamedTuple):
    """What the CCA term needs of one latent after a forward pass."""

    prior: AuxiliaryPrior
    h_before: torch.Tensor
    """The top-down feature before the predecessor was fused in."""
    emb: torch.Tensor
    z: torch.Tensor
    log_step: torch.Tensor
    main_rate: torch.Tensor
    predecessor_rate: torch.Tensor

    def auxiliary_rate(self, detached: bool = False) -> torch.Tensor:
        """−ln P_aux(z) in nats per image; ``detached`` keeps the codec out of the graph
        (the auxiliary prior's own fit)."""
        inputs = (self.h_before, self.emb, self.z, self.log_step)
        return self.prior.rate(*(t.detach() for t in inputs) if detached else inputs)


class CausalContextRegulariser:
    """Records, by forward pre-hooks on ``model``, each latent block's input feature and its
    latent, then fits the auxiliary priors and gives the codec its CCA term."""

    def __init__(self, model: BGVAE, weight: float, lr: float):
        self.model_ref, self.weight = model, weight
        self.pairs = [(stage, i) for stage, s in enumerate(model.stages) for i in range(1, len(s.latents))]
        self.model = nn.ModuleDict({_key(stage, i): AuxiliaryPrior(model.stages[stage].latents[i])
                                    for stage, i in self.pairs})
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self._inputs: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._latents: dict[tuple[int, int], torch.Tensor] = {}
        for stage, s in enumerate(model.stages):
            for i, latent in enumerate(s.latents):
                latent.front.register_forward_pre_hook(self._record_input(stage, i))
                latent.latent_proj.register_forward_pre_hook(self._record_latent(stage, i))

    def _record_input(self, stage: int, i: int):
        def hook(module, args):
            self._inputs[stage, i] = args
        return hook

    def _record_latent(self, stage: int, i: int):
        def hook(module, args):
            self._latents[stage, i] = args[0]
        return hook

    def term(self, out: torch.Tensor, rates: list[torch.Tensor], im: torch.Tensor,
             lmbda: torch.Tensor) -> dict[str, torch.Tensor]:
        """After a training forward pass: one step of the auxiliary priors, then the codec's
        ``penalty`` α·Σ max(R_main − R_aux, −R_predecessor) in nats per sub-pixel (the unit of
        the rate in the loss) and ``cca_bpp``, that capped gap in bits per pixel."""
        num_dims = 3 * im.shape[2] * im.shape[3]
        _, log_ratio = self.model_ref.condition(lmbda)
        stages, cfg = self.model_ref.stages, self.model_ref.cfg
        cases = []
        for stage, i in self.pairs:
            h_before, emb = self._inputs[stage, i - 1]
            cases.append(_AuxiliaryCase(self.model[_key(stage, i)], h_before, emb, self._latents[stage, i],
                                        stages[stage].latents[i].log_step(log_ratio),
                                        rates[cfg.latent_index(stage, i)], rates[cfg.latent_index(stage, i - 1)]))
        self._inputs.clear()
        self._latents.clear()
        self.model.requires_grad_(True)
        fit = sum(case.auxiliary_rate(detached=True).mean() for case in cases)
        self.optimizer.zero_grad(set_to_none=True)
        (fit / num_dims).backward()
        self.optimizer.step()
        self.model.requires_grad_(False)
        gap = sum(torch.maximum(case.main_rate - case.auxiliary_rate(), -case.predecessor_rate.detach())
                  for case in cases)
        per_sub_pixel = gap.mean() / num_dims
        return {"penalty": self.weight * per_sub_pixel,
                "cca_bpp": -per_sub_pixel.detach() * 3 / math.log(2)}


def _key(stage: int, i: int) -> str:
    return f"stage{stage}_latent{i}"
