"""BG-VAE: a QARV-style variable-rate hierarchical VAE with 9 latents in 4 stages.

Layout:

    image ─ stem(4×) ─ bottom-up stages (taps at strides 8/16/32/64) ─┐
                                                                       │ taps
    learned bias (stride 64) ─ top-down stages with latent blocks ◄───┘
        64: z1 │ 32: z2 z3 │ 16: z4 z5 z6 │ 8: z7 z8 z9 ─ synthesis ─ image

The encoder runs the bottom-up path and the top-down path up to the last latent; the
decoder runs the top-down path with the decoded latents and then the synthesis (the
blocks after z9, the ×2 upsampling to stride 4, the stride-4 blocks and the ×4 head),
which is a separate sub-module so a shallow synthesis can replace it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import BGVAEConfig
from .layers import (DC_FREE_WINDOW, BConvNeXt, CrossAttention, LambdaEmbedding, Modulation, PointwiseConv,
                     WaveletDown, WaveletUp, ZeroSumDepthwise, conv)

PAD_MULTIPLE = 64
INPUT_MEAN = 0.4546259594901961
INPUT_SCALE = 3.67572653978347
LOG_SIGMA_FLOOR = -2.3


class LatentBlock(nn.Module):
    """One latent variable: prior from the top-down feature, posterior mean from the
    top-down feature and the encoder tap, then fusion of the latent back into the feature.

    The latent is quantised with a λ-dependent step Δ per channel,
    ``ln Δ = step_offset − step_slope · ln(λ / λ_ref)`` (initially Δ ∝ λ^-½, the
    high-rate optimum for MSE), so the rate follows λ from the first step on; AdaLN then
    refines the rest. The posterior is U(qm − Δ/2, qm + Δ/2); the prior is N(pm, σ²)
    convolved with U(−Δ/2, Δ/2). At test time ``z = pm + Δ·round((qm − pm)/Δ)``, so the
    coder only ever sees the integer residual k, with the prior scale σ/Δ.
    """

    parts = 1
    """Coded parts, each a stream of its own in a file."""

    def __init__(self, width: int, channels: int, tap_width: int, kernel: int, mlp_ratio: float):
        super().__init__()
        self.front = BConvNeXt(width, kernel, mlp_ratio)
        self.end = BConvNeXt(width, kernel, mlp_ratio)
        self.post_tap = BConvNeXt(tap_width, kernel, 2.0)
        self.post_feature = BConvNeXt(width, kernel, 2.0)
        self.post_merged = BConvNeXt(width, kernel, 2.0)
        self.merge = conv(width + tap_width, width, 1)
        self.posterior = conv(width, channels, 3)
        self.latent_proj = conv(channels, width, 1)
        self.prior = conv(width, 2 * channels, 1)
        self.step_offset = nn.Parameter(torch.zeros(channels, 1, 1))
        self.step_slope = nn.Parameter(torch.full((channels, 1, 1), 0.5))

    def log_step(self, log_lambda_ratio: torch.Tensor) -> torch.Tensor:
        """ln Δ, shape (B, C, 1, 1), from ln(λ / λ_ref) of shape (B,)."""
        return self.step_offset - self.step_slope * log_lambda_ratio.view(-1, 1, 1, 1)

    def predict(self, h: torch.Tensor, emb: torch.Tensor, log_lambda_ratio: torch.Tensor) -> "Prior":
        """What every use of a latent starts with: its step, the feature after the front block,
        the prior mean and ln(σ/Δ), the prior scale in units of the step (floored at
        e^-2.3 ≈ 0.1)."""
        log_step = self.log_step(log_lambda_ratio)
        feature = self.front(h, emb)
        mean, raw = self.prior(feature).chunk(2, dim=1)
        return Prior(feature, mean, scale_in_steps(raw, log_step), log_step)

    def posterior_branch(self, prior: "Prior", tap: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The posterior conv's output: here the posterior mean qm."""
        merged = self.merge(torch.cat([self.post_feature(prior.feature, emb), self.post_tap(tap, emb)], dim=1))
        return self.posterior(self.post_merged(merged, emb))

    def residual(self, prior: "Prior", tap: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The posterior mean's offset from the prior mean, in quantisation steps: (qm − pm)/Δ."""
        return (self.posterior_branch(prior, tap, emb) - prior.mean) * torch.exp(-prior.log_step)

    def fuse(self, prior: "Prior", residual: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Feed the latent z = pm + Δ·residual back into the top-down feature."""
        return self.end(prior.feature + self.latent_proj(prior.mean + residual * torch.exp(prior.log_step)), emb)

    def run(self, h: torch.Tensor, emb: torch.Tensor, log_lambda_ratio: torch.Tensor, tap: torch.Tensor | None,
            pick: "PickResidual") -> torch.Tensor:
        """The latent's step of the top-down path: its one coded part is the whole latent,
        whose residual ``pick`` chooses; returns the feature with the latent fused in."""
        prior = self.predict(h, emb, log_lambda_ratio)
        encoder_residual = None if tap is None else (lambda: self.residual(prior, tap, emb))
        return self.fuse(prior, pick(prior.log_scale, encoder_residual), emb)


PickResidual = Callable[[torch.Tensor, "Callable[[], torch.Tensor] | None"], torch.Tensor]
"""pick(ln(σ/Δ) of one coded part of a latent, the encoder's residual (qm − pm)/Δ of that part
as a function, or None when decoding) → the residual the part takes: noisy in training, the
integer k when coding. Called once per coded part, in coding order."""

CONTEXT_KERNEL = 5
"""The checkerboard context's reach: the 12 nearest anchors of a position."""


class CheckerboardLatentBlock(LatentBlock):
    """A latent coded in two parts ("Checkerboard Context Model for Efficient Learned Image
    Compression"): the anchors, the positions (y, x) with y + x even, with the plain prior;
    then the other half with a prior whose mean and scale a 5×5 conv corrects from the
    anchors' decoded values, so each position also sees its spatial neighbours. The conv
    starts at zero: the block then codes exactly as a LatentBlock with the same weights.
    Sides must be even (the stride-8 grid of a padded image always is)."""

    parts = 2

    def __init__(self, width: int, channels: int, tap_width: int, kernel: int, mlp_ratio: float):
        super().__init__(width, channels, tap_width, kernel, mlp_ratio)
        self.context = nn.Conv2d(channels, 2 * channels, CONTEXT_KERNEL, padding=CONTEXT_KERNEL // 2)
        nn.init.zeros_(self.context.weight)
        nn.init.zeros_(self.context.bias)

    def run(self, h: torch.Tensor, emb: torch.Tensor, log_lambda_ratio: torch.Tensor, tap: torch.Tensor | None,
            pick: PickResidual) -> torch.Tensor:
        first = self.predict(h, emb, log_lambda_ratio)
        step = torch.exp(first.log_step)

        @functools.cache
        def posterior_parts() -> tuple[torch.Tensor, torch.Tensor]:  # qm, once, when the encoder first asks
            return checkerboard_split(self.posterior_branch(first, tap, emb))

        def encoder_residual(part: int, part_mean: torch.Tensor) -> "Callable[[], torch.Tensor] | None":
            return None if tap is None else (lambda: (posterior_parts()[part] - part_mean) * torch.exp(-first.log_step))

        anchor_mean, _ = checkerboard_split(first.mean)
        anchor_scale, _ = checkerboard_split(first.log_scale)
        anchors = pick(anchor_scale, encoder_residual(0, anchor_mean))
        mean_shift, raw_shift = self.context(checkerboard_merge(anchors * step, torch.zeros_like(anchors))).chunk(2, 1)
        raw = self.prior(first.feature).chunk(2, dim=1)[1]
        _, other_mean = checkerboard_split(first.mean + mean_shift)
        _, other_scale = checkerboard_split(scale_in_steps(raw + raw_shift, first.log_step))
        others = pick(other_scale, encoder_residual(1, other_mean))
        prior = Prior(first.feature, checkerboard_merge(anchor_mean, other_mean),
                      checkerboard_merge(anchor_scale, other_scale), first.log_step)
        return self.fuse(prior, checkerboard_merge(anchors, others), emb)


def checkerboard_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) with H and W even → the anchors (y + x even) and the others, each
    (B, C, H, W/2), row by row.

    >>> a, o = checkerboard_split(torch.arange(8.).view(1, 1, 2, 4))
    >>> a.flatten().tolist(), o.flatten().tolist()
    ([0.0, 2.0, 5.0, 7.0], [1.0, 3.0, 4.0, 6.0])
    """
    b, c, h, w = x.shape
    cells = x.view(b, c, h // 2, 2, w // 2, 2)
    anchors = torch.stack([cells[:, :, :, 0, :, 0], cells[:, :, :, 1, :, 1]], dim=3)
    others = torch.stack([cells[:, :, :, 0, :, 1], cells[:, :, :, 1, :, 0]], dim=3)
    return anchors.reshape(b, c, h, w // 2), others.reshape(b, c, h, w // 2)


def checkerboard_merge(anchors: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """The inverse of checkerboard_split."""
    b, c, h, half = anchors.shape
    a, o = anchors.view(b, c, h // 2, 2, half), others.view(b, c, h // 2, 2, half)
    even_rows = torch.stack([a[:, :, :, 0], o[:, :, :, 0]], dim=-1)
    odd_rows = torch.stack([o[:, :, :, 1], a[:, :, :, 1]], dim=-1)
    return torch.stack([even_rows, odd_rows], dim=3).reshape(b, c, h, 2 * half)


def scale_in_steps(raw: torch.Tensor, log_step: torch.Tensor) -> torch.Tensor:
    """ln(σ/Δ) from the prior conv's raw scale output, floored softly at e^-2.3 ≈ 0.1."""
    return F.softplus(raw - log_step - LOG_SIGMA_FLOOR) + LOG_SIGMA_FLOOR


class Prior(NamedTuple):
    """A latent's prior, from :meth:`LatentBlock.predict`; its tensors are (B, C, H, W)
    except ``log_step`` (B, C, 1, 1)."""

    feature: torch.Tensor
    mean: torch.Tensor
    log_scale: torch.Tensor
    """ln(σ/Δ)."""
    log_step: torch.Tensor
    """ln Δ."""


def gaussian_log_likelihood(residual: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log P(residual) in nats under N(0, σ²) ⊛ U(−½, ½), computed in float32.

    Uses the symmetric form (|residual|) for precision in the tails, and the log-density
    where the bin probability underflows (P < 1e-6), as QARV does.
    """
    log_sigma = log_sigma.float()
    sigma = torch.exp(log_sigma)
    v = residual.float().abs()
    upper = torch.special.ndtr((0.5 - v) / sigma)
    lower = torch.special.ndtr((-0.5 - v) / sigma)
    p = upper - lower
    log_density = -0.5 * (v / sigma) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
    return torch.where(p < 1e-6, log_density, torch.log(p.clamp_min(1e-8)))


class BottomUpEncoder(nn.Module):
    """4× patchify stem, then ConvNeXt stages separated by wavelet downsampling.

    Returns the taps at strides 64, 32, 16, 8 (coarse first, the order the decoder uses).
    A tap is taken before each stage's extra k7 block and downsampling.
    """

    def __init__(self, cfg: BGVAEConfig):
        super().__init__()
        w = cfg.enc_widths
        self.stem = conv(3, w[0], 4, stride=4)
        self.stages = nn.ModuleList(
            nn.ModuleList(BConvNeXt(w[i], cfg.enc_kernels[i], 2.0) for _ in range(cfg.enc_depths[i]))
            for i in range(len(w))
        )
        self.bridges = nn.ModuleList(BConvNeXt(w[i], 7, 2.0) for i in range(len(w) - 1))
        self.downs = nn.ModuleList(WaveletDown(w[i], w[i + 1]) for i in range(len(w) - 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        taps = []
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x, emb)
            if i > 0:
                taps.append(x)
            if i < len(self.downs):
                x = self.downs[i](self.bridges[i](x, emb))
        return taps[::-1]


class Transition(nn.Module):
    """End of a top-down stage: a ConvNeXt block, wavelet ×2 upsampling and optional
    cross-attention from the upsampled feature to the stage's own (half-resolution) output."""

    def __init__(self, cin: int, cout: int, kernel: int, mlp_ratio: float, attention: bool, dc_free: bool = False):
        super().__init__()
        self.block = BConvNeXt(cin, kernel, mlp_ratio)
        self.up = WaveletUp(cin, cout, dc_free)
        self.attention = CrossAttention(cout, cin) if attention else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        low = self.block(h, emb)
        high = self.up(low)
        return high if self.attention is None else self.attention(high, low)


HEAD_BIASES = ("per-position", "shared")


class PixelShuffleHead(nn.Sequential):
    """A 1×1 conv to 3·s² channels, a ×s pixel shuffle and one bias per colour: a bias per
    sub-position is a fixed s×s pattern that no image asks for and the features must cancel
    (flat colour shows an s-pixel grid, see benchmarks/flat_texture.py)."""

    def __init__(self, cin: int, scale: int):
        super().__init__(PointwiseConv(cin, 3 * scale * scale, bias=False), nn.PixelShuffle(scale), ColourBias())


class ZeroSumPatternHead(nn.Module):
    """A ×s head whose s×s block is a colour from a 1×1 conv plus a pattern that only the
    feature's changes make (ZeroSumDepthwise before the pixel shuffle): a locally constant
    feature decodes to a flat colour, with no s-pixel grid."""

    def __init__(self, cin: int, scale: int):
        super().__init__()
        self.scale = scale
        self.colour = conv(cin, 3, 1)
        channels = 3 * scale * scale
        self.pattern = nn.Sequential(conv(cin, channels, 1), ZeroSumDepthwise(channels, DC_FREE_WINDOW),
                                     nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        colour = self.colour(x).repeat_interleave(self.scale, dim=2).repeat_interleave(self.scale, dim=3)
        return colour + self.pattern(x)


class ColourBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, 3, 1, 1)


class FullSynthesis(nn.Module):
    """Everything after the last latent: transition to stride 4, stride-4 blocks, ×4 head."""

    def __init__(self, cfg: BGVAEConfig):
        super().__init__()
        w8, w4 = cfg.dec_widths[-2], cfg.dec_widths[-1]
        self.transition = Transition(w8, w4, cfg.dec_kernels[-2], cfg.dec_mlp_ratios[-2], cfg.cross_attention[-1],
                                     cfg.dc_free_detail)
        self.blocks = nn.ModuleList(
            BConvNeXt(w4, cfg.dec_kernels[-1], cfg.dec_mlp_ratios[-1]) for _ in range(cfg.stride4_depth)
        )
        if cfg.head_bias not in HEAD_BIASES:
            raise ValueError(f"head_bias must be one of {HEAD_BIASES}, got {cfg.head_bias!r}")
        if cfg.dc_free_detail:
            self.head = ZeroSumPatternHead(w4, 4)
        elif cfg.head_bias == "shared":
            self.head = PixelShuffleHead(w4, 4)
        else:
            self.head = nn.Sequential(conv(w4, 3 * 16, 1), nn.PixelShuffle(4))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.transition(h, emb)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h)


class JpegLikeSynthesis(nn.Module):
    """Shallow synthesis: one linear map from the stride-8 feature to
    pixels, a transposed convolution with stride 8 and kernel 24, so neighbouring 8×8
    blocks overlap and have no edges between them. It is computed as a 3×3 convolution
    to 3·8² channels followed by a pixel shuffle, which is the same linear map and much
    faster than ConvTranspose2d on CPUs. About 1 k multiply-adds per pixel for `small`."""

    def __init__(self, cfg: BGVAEConfig):
        super().__init__()
        w8 = cfg.dec_widths[-2]
        self.modulation = Modulation(w8)
        self.deconv = nn.Sequential(nn.Conv2d(w8, 3 * 64, 3, padding=1), nn.PixelShuffle(8))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.modulation(h, emb))


class TwoLayerSynthesis(nn.Module):
    """Shallow synthesis: a ×4 transposed convolution with a GELU path
    plus a linear residual path, then a ×2 transposed convolution to pixels, each computed
    as a 3×3 convolution and a pixel shuffle (see JpegLikeSynthesis). About 2.5 k
    multiply-adds per pixel for `small`, more than its full synthesis: it is meant for the
    bigger configs, whose full synthesis runs many blocks at stride 4."""

    def __init__(self, cfg: BGVAEConfig, hidden: int = 12):
        super().__init__()
        w8 = cfg.dec_widths[-2]
        self.modulation = Modulation(w8)
        self.up4 = nn.Sequential(nn.Conv2d(w8, 2 * hidden * 16, 3, padding=1), nn.PixelShuffle(4))
        self.up2 = nn.Sequential(nn.Conv2d(hidden, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        nonlinear, linear = self.up4(self.modulation(h, emb)).chunk(2, dim=1)
        return self.up2(F.gelu(nonlinear) + linear)


SHALLOW_SYNTHESES = {"jpeg-like": JpegLikeSynthesis, "two-layer": TwoLayerSynthesis}


class TopDownStage(nn.Module):
    def __init__(self, cfg: BGVAEConfig, i: int, tap_width: int, latent_block: type[LatentBlock]):
        super().__init__()
        w, k, r = cfg.dec_widths[i], cfg.dec_kernels[i], cfg.dec_mlp_ratios[i]
        self.blocks = nn.ModuleList(BConvNeXt(w, k, r) for _ in range(cfg.dec_pre_blocks[i]))
        self.latents = nn.ModuleList(
            latent_block(w, channels, tap_width, k, r) for channels in cfg.stage_channels(i)
        )


# visit(stage index, latent block, top-down feature) -> feature after fusing the latent
LatentVisitor = Callable[[int, nn.Module, torch.Tensor], torch.Tensor]
ChooseResidual = Callable[[int, torch.Tensor, "Callable[[], torch.Tensor] | None"], torch.Tensor]
"""choose(index of the coded part, counted over all latents; the part's ln(σ/Δ); the encoder's
residual (qm − pm)/Δ of the part as a function, or None when decoding) → the part's integer
residual k, as a tensor of its prior's shape and dtype: the latent is z = pm + Δ·k. A latent
has LatentBlock.parts coded parts."""


class HierarchicalVAE(nn.Module):
    """What BG-VAE and its bound model (bgcodec.bound) share: λ conditioning, the bottom-up
    encoder, the top-down path with one kind of latent block, and the full synthesis."""

    kind = "abstract"
    """Recorded in weights files, so a file of one kind is not loaded as the other."""

    def __init__(self, cfg: BGVAEConfig, latent_block: Callable[[int], type[LatentBlock]]):
        """``latent_block(stage)`` is the kind of latent block of each stage."""
        super().__init__()
        if len(cfg.latents_per_stage) != 4 or len(cfg.dec_widths) != 5 or len(cfg.enc_widths) != 5:
            raise ValueError("BG-VAE has 5 encoder stages and 4 latent stages + a stride-4 stage")
        self.cfg = cfg
        self.lambda_embedding = LambdaEmbedding()
        self.encoder = BottomUpEncoder(cfg)
        self.bias = nn.Parameter(torch.zeros(1, cfg.dec_widths[0], 1, 1))
        tap_widths = cfg.enc_widths[:0:-1]  # strides 64, 32, 16, 8
        self.stages = nn.ModuleList(TopDownStage(cfg, i, tap_widths[i], latent_block(i)) for i in range(4))
        self.transitions = nn.ModuleList(
            Transition(cfg.dec_widths[i], cfg.dec_widths[i + 1], cfg.dec_kernels[i], cfg.dec_mlp_ratios[i],
                       cfg.cross_attention[i])
            for i in range(3)
        )
        self.synthesis = FullSynthesis(cfg)

    def condition(self, lmbda: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """λ (model convention), shape (B,) → the conditioning vector (B, 256) and ln(λ / λ_ref),
        where λ_ref is the geometric mean of the model's λ range."""
        lo, hi = self.cfg.lmbda_range
        return self.lambda_embedding(lmbda), torch.log(lmbda.to(self.bias.dtype)) - 0.5 * math.log(lo * hi)

    @staticmethod
    def preprocess(im: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] → network input (ImageNet-normalised)."""
        return (im - INPUT_MEAN) * INPUT_SCALE

    def top_down(self, emb: torch.Tensor, grid: tuple[int, int], visit: LatentVisitor) -> torch.Tensor:
        """Run the top-down path up to (and including) the last latent.

        ``grid`` is the size at stride 64. ``visit`` decides how each latent is obtained
        (noisy posterior sample, quantised posterior, or decoded symbols).
        """
        h = self.bias.expand(emb.shape[0], -1, *grid)
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                h = block(h, emb)
            for latent in stage.latents:
                h = visit(i, latent, h)
            if i < len(self.transitions):
                h = self.transitions[i](h, emb)
        return h


class BGVAE(HierarchicalVAE):
    """The practical codec: quantised latents with discretised-Gaussian priors."""

    kind = "bgvae"

    def __init__(self, cfg: BGVAEConfig):
        if cfg.checkerboard[0]:
            raise ValueError("the stride-64 grid may be one position wide: no checkerboard there")
        super().__init__(cfg, lambda stage: CheckerboardLatentBlock if cfg.checkerboard[stage] else LatentBlock)
        if cfg.shallow_synthesis not in SHALLOW_SYNTHESES:
            raise ValueError(f"shallow_synthesis must be one of {sorted(SHALLOW_SYNTHESES)}")
        self.shallow_synthesis = SHALLOW_SYNTHESES[cfg.shallow_synthesis](cfg)

    # -- training -------------------------------------------------------------------

    def forward(self, im: torch.Tensor, lmbda: torch.Tensor, noisy: bool | None = None, synthesis: str = "full"):
        """Training / evaluation pass on images in [0, 1] whose sides are multiples of 64.

        Returns the reconstruction in [-1, 1] by the given synthesis and the rate of each
        latent in nats, each of shape (B,). With ``noisy`` (default: ``self.training``)
        latents are posterior samples ``qm + Δ·U(−½, ½)``; otherwise they are quantised as
        when coding.
        """
        h, emb, rates = self.latent_features(im, lmbda, self.training if noisy is None else noisy)
        return self.synthesis_module(synthesis)(h, emb), rates

    def latent_features(self, im: torch.Tensor, lmbda: torch.Tensor, noisy: bool):
        """The top-down feature after the last latent (the synthesis input), the λ embedding
        and the rate of each latent in nats."""
        emb, log_ratio = self.condition(lmbda)
        taps = self.encoder(self.preprocess(im), emb)
        rates = []

        def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
            part_rates = []

            def pick(log_scale: torch.Tensor, encoder_residual: Callable[[], torch.Tensor]) -> torch.Tensor:
                residual = encoder_residual()
                if noisy:
                    residual = residual + torch.empty_like(residual).uniform_(-0.5, 0.5)
                else:
                    residual = torch.round(residual)
                with torch.autocast(device_type=residual.device.type, enabled=False):
                    part_rates.append(-gaussian_log_likelihood(residual, log_scale).sum(dim=(1, 2, 3)))
                return residual

            h = latent.run(h, emb, log_ratio, taps[stage], pick)
            rates.append(sum(part_rates))
            return h

        grid = (im.shape[2] // PAD_MULTIPLE, im.shape[3] // PAD_MULTIPLE)
        return self.top_down(emb, grid, visit), emb, rates

    # -- coding (batch size 1; see bgcodec.codec for precision and devices) ----------

    @torch.no_grad()
    def analyse(self, im: torch.Tensor, lmbda: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up pass: the encoder taps (coarse first). May run on any device."""
        return self.encoder(self.preprocess(im), self.condition(lmbda)[0])

    def synthesize(self, h: torch.Tensor, lmbda: torch.Tensor, kind: str = "full") -> torch.Tensor:
        """Synthesis input (from encode_latents or decode_latents) → image in [-1, 1]."""
        return self.synthesis_module(kind)(h, self.condition(lmbda)[0])

    def synthesis_module(self, kind: str) -> nn.Module:
        """The full or the shallow synthesis (the kinds of bgcodec.container.SYNTHESIS_KINDS)."""
        return self.synthesis if kind == "full" else self.shallow_synthesis

    @torch.no_grad()
    def encode_latents(self, taps: list[torch.Tensor], lmbda: torch.Tensor, choose: ChooseResidual) -> torch.Tensor:
        """Run the probability path the decoder runs, with the latents ``choose`` picks (see
        ChooseResidual; the encoder's residuals come from ``taps``); returns the synthesis input."""
        emb, log_ratio = self.condition(lmbda)
        parts = itertools.count()

        def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
            return latent.run(h, emb, log_ratio, taps[stage],
                              lambda log_scale, residual: choose(next(parts), log_scale, residual))

        return self.top_down(emb, tuple(taps[0].shape[2:]), visit)

    @torch.no_grad()
    def decode_latents(self, lmbda: torch.Tensor, grid: tuple[int, int], choose: ChooseResidual) -> torch.Tensor:
        """Rebuild the latents from the integer residuals ``choose`` returns (it is given no
        encoder residual); returns the synthesis input. ``grid`` is the size at stride 64."""
        emb, log_ratio = self.condition(lmbda)
        parts = itertools.count()

        def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
            return latent.run(h, emb, log_ratio, None, lambda log_scale, _: choose(next(parts), log_scale, None))

        return self.top_down(emb, grid, visit)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
