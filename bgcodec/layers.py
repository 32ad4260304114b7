"""Building blocks of BG-VAE.

Every block that takes ``emb`` is conditioned on λ through AdaLN. The only other λ path
is the quantisation step of the latents (bgcodec.model.LatentBlock).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 256
DC_FREE_WINDOW = 9
"""Window of the zero-sum filters: what is constant over it makes no detail."""


class PointwiseConv(nn.Linear):
    """A 1×1 conv computed as a Linear over the channels of an NCHW tensor.

    On channels-last data this is one GEMM without layout conversions, which trains faster
    than nn.Conv2d on CPUs (docs/DESIGN.md).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DepthwiseConv(nn.Conv2d):
    """A 'same'-padded depthwise conv (stride 1, odd kernel). In float64, which has no fast
    CPU kernel (torch runs one small convolution per channel), it is computed as k² shifted
    multiply-adds over the whole tensor; float32 keeps torch's kernels."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.dtype != torch.float64:
            return super()._conv_forward(x, weight, bias)
        pad = self.padding[0]
        return _shifted_depthwise(F.pad(x, (pad, pad, pad, pad)), weight, bias)


def _shifted_depthwise(padded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 'valid' depthwise conv of an already padded tensor as k² shifted multiply-adds."""
    k = weight.shape[-1]
    height, width = padded.shape[2] - k + 1, padded.shape[3] - k + 1
    out = padded.new_zeros(padded.shape[0], padded.shape[1], height, width)
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    for i in range(k):
        for j in range(k):
            out.addcmul_(padded[:, :, i:i + height, j:j + width], weight[:, 0, i, j].view(1, -1, 1, 1))
    return out


class ZeroSumDepthwise(nn.Module):
    """A k×k depthwise conv whose kernels sum to zero, with edge-replicating padding: a
    locally constant input gives exactly zero, at the borders too. It starts as the input
    minus its k×k mean, so it passes what changes within the window (see WaveletUp).

    Each kernel is its weight minus ``dc_removed`` times the weight's mean. Coding always
    uses 1; training may raise it from 0 (the identity) to 1 (bgcodec train --dc-free-ramp).
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 1, kernel_size, kernel_size))
        with torch.no_grad():
            self.weight[:, :, kernel_size // 2, kernel_size // 2] = 1
        self.dc_removed = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight - self.dc_removed * self.weight.mean(dim=(2, 3), keepdim=True)
        pad = self.weight.shape[-1] // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        if x.dtype == torch.float64:
            return _shifted_depthwise(padded, weight, None)
        return F.conv2d(padded, weight, groups=x.shape[1])


def conv(cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Module:
    """A 'same'-padded conv whose bias starts at zero (QARV's conv factory)."""
    if kernel_size == 1 and stride == 1 and groups == 1:
        layer = PointwiseConv(cin, cout)
    elif groups == cin == cout and stride == 1 and kernel_size % 2:
        layer = DepthwiseConv(cin, cout, kernel_size, padding=kernel_size // 2, groups=groups)
    else:
        layer = nn.Conv2d(cin, cout, kernel_size, stride, padding=(kernel_size - 1) // 2 if stride == 1 else 0,
                          groups=groups)
    nn.init.zeros_(layer.bias)
    return layer


class Modulation(nn.Module):
    """Per-channel scale and shift of an NCHW tensor from the λ embedding; starts as the identity."""

    def __init__(self, dim: int, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.linear = nn.Linear(embed_dim, 2 * dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.gelu(emb))[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class LambdaEmbedding(nn.Module):
    """λ → 256-d embedding: sinusoids of ln λ (max period 64), then a 2-layer MLP."""

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        half = dim // 2
        # Python floats, not a torch kernel: vectorised and scalar pow differ in the last bit,
        # and these values decide the coder's tables (bgcodec.codec). Not a buffer, so that
        # a model built on the meta device holds nothing but its weights.
        self.freqs = [64.0 ** (-i / (half - 1)) for i in range(half)]
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, lmbda: torch.Tensor) -> torch.Tensor:
        weight = self.mlp[0].weight
        freqs = torch.tensor(self.freqs, dtype=torch.float32).to(weight.device, weight.dtype)
        s = torch.log(lmbda.to(freqs.dtype)).unsqueeze(1) * (64 / math.log(8192))
        angles = s * freqs.unsqueeze(0)
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=1))


class BConvNeXt(nn.Module):
    """Balanced ConvNeXt block: depthwise conv, DC/HC re-weighting, LN + AdaLN(λ), MLP, layer scale.

    The DC/HC re-weighting (FeatScale) splits the depthwise output into its spatial mean
    (DC) and the rest (HC) and adds learnable per-channel multiples of each, both
    starting at zero so a fresh block is a plain ConvNeXt block.
    """

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 2.0, embed_dim: int = EMBED_DIM):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.dwconv = conv(dim, dim, kernel_size, groups=dim)
        self.dc_scale = nn.Parameter(torch.zeros(dim, 1, 1))
        self.hc_scale = nn.Parameter(torch.zeros(dim, 1, 1))
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.GELU(), nn.Linear(embed_dim, 2 * dim))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.layer_scale = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        u = self.dwconv(x)
        dc = u.mean(dim=(2, 3), keepdim=True)
        u = u + self.dc_scale * dc + self.hc_scale * (u - dc)
        v = self.norm(u.permute(0, 2, 3, 1))
        shift, scale = self.modulation(emb)[:, None, None, :].chunk(2, dim=-1)
        v = self.mlp(v * (1 + scale) + shift) * self.layer_scale
        return x + v.permute(0, 3, 1, 2)


# Orthonormal 2-D Haar transform, subbands in pywt.dwt2's order and signs (cA, cH, cV, cD):
# for each 2×2 block [[a, b], [c, d]]:
#   cA = (a+b+c+d)/2, cH = (a+b-c-d)/2, cV = (a-b+c-d)/2, cD = (a-b-c+d)/2.
# The matrix is symmetric and orthogonal, so it is its own inverse.
def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 2H, 2W) → (B, 4, C, H, W) holding the subbands cA, cH, cV, cD."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.stack([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d], dim=1) * 0.5


def haar_idwt(bands: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`: (B, 4, C, H, W) → (B, C, 2H, 2W)."""
    ca, ch, cv, cd = bands.unbind(dim=1)
    a = (ca + ch + cv + cd) * 0.5
    b = (ca + ch - cv - cd) * 0.5
    c = (ca - ch + cv - cd) * 0.5
    d = (ca - ch - cv + cd) * 0.5
    top = torch.stack([a, b], dim=-1).flatten(-2)
    bottom = torch.stack([c, d], dim=-1).flatten(-2)
    return torch.stack([top, bottom], dim=-2).flatten(-3, -2)


class WaveletDown(nn.Module):
    """×2 downsampling: Haar DWT, concatenate the four subbands, 1×1 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = conv(4 * cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(haar_dwt(x).flatten(1, 2))


class WaveletUp(nn.Module):
    """×2 upsampling: 1×1 conv to four subbands, inverse Haar DWT.

    With ``dc_free`` the three detail bands pass a ZeroSumDepthwise (which cancels their
    bias too), so a locally constant feature upsamples to a constant one; otherwise it
    becomes a fixed 2×2 pattern, a grid at the layer's stride in flat areas
    (benchmarks/flat_texture.py).
    """

    def __init__(self, cin: int, cout: int, dc_free: bool = False):
        super().__init__()
        self.cout, self.dc_free = cout, dc_free
        if dc_free:
            self.low = conv(cin, cout, 1)
            self.detail = nn.Sequential(PointwiseConv(cin, 3 * cout), ZeroSumDepthwise(3 * cout, DC_FREE_WINDOW))
        else:
            self.proj = conv(cin, 4 * cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = torch.cat([self.low(x), self.detail(x)], dim=1) if self.dc_free else self.proj(x)
        return haar_idwt(bands.unflatten(1, (4, self.cout)))


def set_dc_removed(module: nn.Module, share: float) -> None:
    """Set ``dc_removed`` of every ZeroSumDepthwise in ``module``."""
    for m in module.modules():
        if isinstance(m, ZeroSumDepthwise):
            m.dc_removed = share


class CrossAttention(nn.Module):
    """Cross-attention from high-resolution queries to the previous (half-resolution) stage.

    A depthwise 3×3 conv adds a conditional positional encoding (CPVT's PEG) to the
    queries' features first; the output enters through a layer scale that starts at 1e-6.
    """

    def __init__(self, dim_high: int, dim_low: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, dim_high // head_dim)
        self.position = conv(dim_high, dim_high, 3, groups=dim_high)
        self.norm_q = nn.LayerNorm(dim_high, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim_low, eps=1e-6)
        self.to_q = nn.Linear(dim_high, dim_high)
        self.to_kv = nn.Linear(dim_low, 2 * dim_high)
        self.to_out = nn.Linear(dim_high, dim_high)
        self.layer_scale = nn.Parameter(torch.full((dim_high,), 1e-6))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        high = high + self.position(high)
        b, c, h, w = high.shape
        q = self.to_q(self.norm_q(high.flatten(2).transpose(1, 2)))
        k, v = self.to_kv(self.norm_kv(low.flatten(2).transpose(1, 2))).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        out = self.to_out(out) * self.layer_scale
        return high + out.transpose(1, 2).reshape(b, c, h, w)
