"""Growing trained weights into a wider config, so `bgcodec train --init` carries a trained
model over to more channels instead of starting those layers from scratch.

A tensor whose shape grew is copied into the part of the new tensor that plays the old
one's role; the new part starts so that the network still computes what it did: new
output units are zero, and new input weights keep their random initialisation because
the units they read start at zero. Only LayerNorm sees the new (zero) channels, so the
grown model is close to the old one, not equal to it; training then puts the new channels
to use. New latent channels cost no rate at first: their residual is 0 and their prior
scale starts at its floor.
"""

from __future__ import annotations

import re

import torch

from ..config import BGVAEConfig

# Output dimensions that hold several blocks of channels: AdaLN and Modulation (shift,
# scale), the prior (mean, raw scale), cross-attention keys and values, and wavelet
# upsampling (four subbands). Wavelet downsampling reads four subbands.
_OUTPUT_GROUPS = ((re.compile(r"modulation\.(1|linear)\.|\.prior\.|\.to_kv\."), 2), (re.compile(r"\.up\.proj\."), 4))
_INPUT_GROUPS = ((re.compile(r"^encoder\.downs\.\d+\.proj\."), 4),)
_MERGE = re.compile(r"^stages\.(\d)\.latents\.\d+\.merge\.weight$")
_NEW_PRIOR_RAW_SCALE = -6.0  # σ/Δ ≤ 0.15 over the λ range: P(0) > 0.999


def _groups(name: str, rules) -> int:
    return next((n for pattern, n in rules if pattern.search(name)), 1)


def _positions(name: str, dim: int, old: int, new: int, old_cfg: BGVAEConfig, new_cfg: BGVAEConfig) -> torch.Tensor:
    """Where the ``old`` entries of dimension ``dim`` go among the ``new`` ones."""
    merge = _MERGE.match(name)
    if dim == 1 and merge:
        # the concatenation of the top-down feature and the encoder tap
        stage = int(merge.group(1))
        old_split, new_split = old_cfg.dec_widths[stage], new_cfg.dec_widths[stage]
        return torch.cat([torch.arange(old_split), torch.arange(new_split, new_split + old - old_split)])
    if dim >= 2:
        # a conv kernel: centred in a zero ring, so a 'same'-padded conv filters as it did
        return torch.arange(old) + (new - old) // 2
    g = _groups(name, _OUTPUT_GROUPS if dim == 0 else _INPUT_GROUPS)
    if old % g or new % g:
        raise ValueError(f"{name}: cannot grow {old} → {new} in {g} groups")
    return torch.cat([torch.arange(k * (new // g), k * (new // g) + old // g) for k in range(g)])


def _fill_new_outputs(name: str, grown: torch.Tensor, old: torch.Tensor, is_new: torch.Tensor) -> None:
    if name.endswith("layer_scale"):
        grown[is_new] = 1e-6  # as a fresh block; with 0 it and its MLP would get no gradient
    elif name.endswith(("step_offset", "step_slope")):
        grown[is_new] = old.mean()
    elif name.endswith(".prior.bias"):
        grown[is_new] = 0
        half = grown.shape[0] // 2
        grown[half:][is_new[half:]] = _NEW_PRIOR_RAW_SCALE
    else:
        grown[is_new] = 0


def grow_tensor(name: str, old: torch.Tensor, new: torch.Tensor, old_cfg: BGVAEConfig,
                new_cfg: BGVAEConfig) -> torch.Tensor:
    """``old`` placed inside a copy of the freshly initialised ``new`` (see the module doc)."""
    if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape)):
        raise ValueError(f"{name}: {tuple(old.shape)} does not fit in {tuple(new.shape)}")
    positions = [_positions(name, d, o, n, old_cfg, new_cfg) for d, (o, n) in enumerate(zip(old.shape, new.shape))]
    grown = new.detach().clone()
    if old.shape[2:] != new.shape[2:]:
        ring = torch.ones(new.shape[2:], dtype=torch.bool)
        ring[torch.meshgrid(*positions[2:], indexing="ij")] = False
        grown[..., ring] = 0
    if old.shape[0] != new.shape[0]:
        is_new = torch.ones(new.shape[0], dtype=torch.bool)
        is_new[positions[0]] = False
        _fill_new_outputs(name, grown, old, is_new)
    grown[torch.meshgrid(*positions, indexing="ij")] = old.to(grown.dtype)
    return grown
