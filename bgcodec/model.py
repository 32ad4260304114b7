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

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import BConvNeXt, CrossAttention, LambdaEmbedding, Modulation, WaveletDown, WaveletUp, conv

PAD_MULTIPLE = 64
INPUT_MEAN = 0.4546259594901961
INPUT_SCALE = 3.67572653978347
LOG_SIGMA_FLOOR = -2.3


@dataclass(frozen=True)
class BGVAEConfig:
    """Widths and depths of a BG-VAE. Stage tuples run from fine to coarse in the encoder
    (strides 4, 8, 16, 32, 64) and from coarse to fine in the decoder (64, 32, 16, 8, 4)."""

    enc_widths: tuple[int, ...] = (192, 384, 512, 512, 512)
    enc_depths: tuple[int, ...] = (6, 6, 6, 4, 4)
    enc_kernels: tuple[int, ...] = (7, 7, 5, 3, 1)
    dec_widths: tuple[int, ...] = (512, 512, 384, 256, 128)
    dec_kernels: tuple[int, ...] = (1, 3, 5, 7, 7)
    dec_mlp_ratios: tuple[float, ...] = (4.0, 3.0, 2.0, 1.75, 1.5)
    dec_pre_blocks: tuple[int, ...] = (0, 1, 1, 1)
    latent_channels: tuple[int, ...] = (32, 32, 96, 8)
    latents_per_stage: tuple[int, ...] = (1, 2, 3, 3)
    stride4_depth: int = 8
    cross_attention: tuple[bool, ...] = (True, True, True, True)
    """Cross-attention at the top-down transitions 64→32, 32→16, 16→8 and 8→4."""
    lmbda_range: tuple[float, float] = (16.0, 2048.0)
    """λ range in the model's own convention (see bgcodec.lambdas)."""
    shallow_synthesis: str = "jpeg-like"
    """The cheap alternative decoder head: "two-layer" or "jpeg-like" (see SHALLOW_SYNTHESES)."""

    @property
    def num_latents(self) -> int:
        return sum(self.latents_per_stage)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BGVAEConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


CONFIGS: dict[str, BGVAEConfig] = {
    # The published layout, for GPU users: 95.7 M parameters (the paper reports 97.4 M; its
    # cross-attention design is not public, ours has no MLP, see docs/DESIGN.md).
    "paper": BGVAEConfig(),
    # What 2 CPU cores can train: 6.40 M parameters (plus 0.14 M in the shallow synthesis);
    # one training step (forward, backward, fused Adam) on 16 crops of 128×128 takes 0.54 s
    # on this project's 2-core machine (channels_last, fp32). The stride-8 path is 64
    # channels wide with 16 channels per latent: at 40 and 8 it capped Kodak near 35 dB
    # (docs/DESIGN.md, `small` config).
    "small": BGVAEConfig(
        enc_widths=(32, 64, 96, 128, 128),
        enc_depths=(1, 1, 1, 1, 1),
        enc_kernels=(3, 3, 3, 3, 1),
        dec_widths=(128, 128, 96, 64, 32),
        dec_kernels=(1, 3, 3, 3, 3),
        dec_mlp_ratios=(2.0, 2.0, 2.0, 1.5, 1.5),
        dec_pre_blocks=(0, 1, 1, 1),
        latent_channels=(16, 16, 32, 16),
        stride4_depth=1,
        cross_attention=(True, True, False, False),
        lmbda_range=(1.0, 2048.0),
    ),
    # Smallest config that still exercises every code path; for tests.
    "tiny": BGVAEConfig(
        enc_widths=(16, 24, 32, 32, 32),
        enc_depths=(1, 1, 1, 1, 1),
        enc_kernels=(3, 3, 3, 3, 1),
        dec_widths=(32, 32, 32, 24, 16),
        dec_kernels=(1, 3, 3, 3, 3),
        dec_mlp_ratios=(2.0, 2.0, 2.0, 2.0, 2.0),
        dec_pre_blocks=(0, 1, 1, 1),
        latent_channels=(4, 4, 4, 4),
        stride4_depth=1,
        cross_attention=(True, True, True, True),
    ),
}


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

    def prior_params(self, h: torch.Tensor, emb: torch.Tensor, log_step: torch.Tensor):
        """Returns the feature after the front block, the prior mean and ln(σ/Δ), the
        prior scale in units of the quantisation step (floored at e^-2.3 ≈ 0.1)."""
        h = self.front(h, emb)
        mean, raw = self.prior(h).chunk(2, dim=1)
        log_scale = F.softplus(raw - log_step - LOG_SIGMA_FLOOR) + LOG_SIGMA_FLOOR
        return h, mean, log_scale

    def posterior_branch(self, h: torch.Tensor, tap: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The posterior conv's output: here the posterior mean qm."""
        merged = self.merge(torch.cat([self.post_feature(h, emb), self.post_tap(tap, emb)], dim=1))
        return self.posterior(self.post_merged(merged, emb))

    def residual(self, h: torch.Tensor, tap: torch.Tensor, emb: torch.Tensor, mean: torch.Tensor,
                 log_step: torch.Tensor) -> torch.Tensor:
        """The posterior mean's offset from the prior mean, in quantisation steps: (qm − pm)/Δ."""
        return (self.posterior_branch(h, tap, emb) - mean) * torch.exp(-log_step)

    def fuse(self, h: torch.Tensor, mean: torch.Tensor, residual: torch.Tensor, log_step: torch.Tensor,
             emb: torch.Tensor) -> torch.Tensor:
        """Feed the latent z = pm + Δ·residual back into the top-down feature."""
        return self.end(h + self.latent_proj(mean + residual * torch.exp(log_step)), emb)


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

    def __init__(self, cin: int, cout: int, kernel: int, mlp_ratio: float, attention: bool):
        super().__init__()
        self.block = BConvNeXt(cin, kernel, mlp_ratio)
        self.up = WaveletUp(cin, cout)
        self.attention = CrossAttention(cout, cin) if attention else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        low = self.block(h, emb)
        high = self.up(low)
        return high if self.attention is None else self.attention(high, low)


class FullSynthesis(nn.Module):
    """Everything after the last latent: transition to stride 4, stride-4 blocks, ×4 head."""

    def __init__(self, cfg: BGVAEConfig):
        super().__init__()
        w8, w4 = cfg.dec_widths[-2], cfg.dec_widths[-1]
        self.transition = Transition(w8, w4, cfg.dec_kernels[-2], cfg.dec_mlp_ratios[-2], cfg.cross_attention[-1])
        self.blocks = nn.ModuleList(
            BConvNeXt(w4, cfg.dec_kernels[-1], cfg.dec_mlp_ratios[-1]) for _ in range(cfg.stride4_depth)
        )
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
    def __init__(self, cfg: BGVAEConfig, i: int, tap_width: int, latent_block: type[nn.Module]):
        super().__init__()
        w, k, r = cfg.dec_widths[i], cfg.dec_kernels[i], cfg.dec_mlp_ratios[i]
        self.blocks = nn.ModuleList(BConvNeXt(w, k, r) for _ in range(cfg.dec_pre_blocks[i]))
        self.latents = nn.ModuleList(
            latent_block(w, cfg.latent_channels[i], tap_width, k, r) for _ in range(cfg.latents_per_stage[i])
        )


# visit(stage index, latent block, top-down feature) -> feature after fusing the latent
LatentVisitor = Callable[[int, nn.Module, torch.Tensor], torch.Tensor]


class HierarchicalVAE(nn.Module):
    """What BG-VAE and its bound model (bgcodec.bound) share: λ conditioning, the bottom-up
    encoder, the top-down path with one kind of latent block, and the full synthesis."""

    kind = "abstract"
    """Recorded in weights files, so a file of one kind is not loaded as the other."""

    def __init__(self, cfg: BGVAEConfig, latent_block: type[nn.Module]):
        super().__init__()
        if len(cfg.latents_per_stage) != 4 or len(cfg.dec_widths) != 5 or len(cfg.enc_widths) != 5:
            raise ValueError("BG-VAE has 5 encoder stages and 4 latent stages + a stride-4 stage")
        self.cfg = cfg
        self.lambda_embedding = LambdaEmbedding()
        self.encoder = BottomUpEncoder(cfg)
        self.bias = nn.Parameter(torch.zeros(1, cfg.dec_widths[0], 1, 1))
        tap_widths = cfg.enc_widths[:0:-1]  # strides 64, 32, 16, 8
        self.stages = nn.ModuleList(TopDownStage(cfg, i, tap_widths[i], latent_block) for i in range(4))
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
        super().__init__(cfg, LatentBlock)
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
            log_step = latent.log_step(log_ratio)
            h, mean, log_scale = latent.prior_params(h, emb, log_step)
            residual = latent.residual(h, taps[stage], emb, mean, log_step)
            if noisy:
                residual = residual + torch.empty_like(residual).uniform_(-0.5, 0.5)
            else:
                residual = torch.round(residual)
            with torch.autocast(device_type=residual.device.type, enabled=False):
                rates.append(-gaussian_log_likelihood(residual, log_scale).sum(dim=(1, 2, 3)))
            return latent.fuse(h, mean, residual, log_step, emb)

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
    def encode_latents(self, taps: list[torch.Tensor], lmbda: torch.Tensor, depth: int | None = None,
                       residuals: list[torch.Tensor] | None = None):
        """Quantise the latents through the probability path the decoder runs.

        Latents past ``depth`` (default: all) are not transmitted: their residuals are 0,
        so they take their prior means, as in the decoder. ``residuals`` (continuous, in
        quantisation steps) replace the encoder's ``(qm − pm)/Δ``, e.g. by iteratively
        optimised ones; they are rounded here.
        Returns the integer residuals (int64) and the prior's ln(σ/Δ) of each latent, as
        numpy arrays, and the top-down feature after the last latent (the synthesis input).
        """
        depth = self.cfg.num_latents if depth is None else depth
        emb, log_ratio = self.condition(lmbda)
        symbols, log_scales = [], []

        def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
            log_step = latent.log_step(log_ratio)
            h, mean, log_scale = latent.prior_params(h, emb, log_step)
            if len(symbols) < depth:
                if residuals is None:
                    k = torch.round(latent.residual(h, taps[stage], emb, mean, log_step))
                else:
                    k = torch.round(residuals[len(symbols)]).to(mean.dtype)
            else:
                k = torch.zeros_like(mean)
            symbols.append(k.numpy().astype(np.int64))
            log_scales.append(log_scale.numpy())
            return latent.fuse(h, mean, k, log_step, emb)

        grid = tuple(taps[0].shape[2:])
        h = self.top_down(emb, grid, visit)
        return symbols, log_scales, h

    @torch.no_grad()
    def decode_latents(self, lmbda: torch.Tensor, grid: tuple[int, int],
                       read_symbols: Callable[[int, np.ndarray], np.ndarray | None]) -> torch.Tensor:
        """Rebuild the latents from their residuals; returns the synthesis input.

        ``read_symbols(latent index, the prior's ln(σ/Δ))`` returns that latent's integer
        residuals, or None for a latent that is not in the file (it then takes its prior mean).
        """
        emb, log_ratio = self.condition(lmbda)
        count = 0

        def visit(stage: int, latent: LatentBlock, h: torch.Tensor) -> torch.Tensor:
            nonlocal count
            log_step = latent.log_step(log_ratio)
            h, mean, log_scale = latent.prior_params(h, emb, log_step)
            symbols = read_symbols(count, log_scale.numpy())
            count += 1
            k = torch.zeros_like(mean) if symbols is None else torch.from_numpy(symbols).to(mean.dtype)
            return latent.fuse(h, mean, k, log_step, emb)

        return self.top_down(emb, grid, visit)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
