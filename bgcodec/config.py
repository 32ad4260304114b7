"""What a model and a coding run are configured by, without torch, so that the command line
offers these choices, and checks λ against a weights file's range, without importing it:
the model configs, the encoder's effort levels, the devices, and which weights file a run
uses with the λ range it declares.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import lambdas
from .errors import WeightsError

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
    latent_channels: tuple[int | tuple[int, ...], ...] = (32, 32, 96, 8)
    """Channels of each latent per stage: one number for all latents of the stage, or one per
    latent (uneven groups, see uneven_groups)."""
    latents_per_stage: tuple[int, ...] = (1, 2, 3, 3)
    stride4_depth: int = 8
    cross_attention: tuple[bool, ...] = (True, True, True, True)
    """Cross-attention at the top-down transitions 64→32, 32→16, 16→8 and 8→4."""
    lmbda_range: tuple[float, float] = (16.0, 2048.0)
    """λ range in the model's own convention (see bgcodec.lambdas)."""
    shallow_synthesis: str = "jpeg-like"
    """The cheap alternative decoder head: "two-layer" or "jpeg-like" (see SHALLOW_SYNTHESES)."""
    head_bias: str = "per-position"
    """Bias of the full synthesis's ×4 head: one per output sub-position ("per-position", the
    default of files that do not name it) or one per colour ("shared", see PixelShuffleHead)."""
    dc_free_detail: bool = False
    """In the full synthesis, the detail bands of the ×2 wavelet upsampling and the pattern
    within the ×4 head's 4×4 blocks pass zero-sum filters (layers.ZeroSumDepthwise,
    model.ZeroSumPatternHead): a feature constant over their window decodes flat, without
    the 8- and 4-pixel grids. The head then has one bias per colour whatever ``head_bias``
    says. The top-down path is unchanged: its latents can correct what its upsamplings make."""
    checkerboard: tuple[bool, ...] = (False, False, False, False)
    """Per decoder stage: its latents are coded in two checkerboard halves, the second with a
    spatial context from the first (bgcodec.model.CheckerboardLatentBlock; not at stride 64)."""

    @property
    def num_latents(self) -> int:
        return sum(self.latents_per_stage)

    @property
    def num_parts(self) -> int:
        """Coded parts of all latents: a file's streams when it holds every latent."""
        return self.parts_of(self.num_latents)

    def parts_of(self, depth: int) -> int:
        """The coded parts of the first ``depth`` latents (two per checkerboard latent)."""
        per_latent = [2 if board else 1 for board, count in zip(self.checkerboard, self.latents_per_stage)
                      for _ in range(count)]
        return sum(per_latent[:depth])

    def latent_index(self, stage: int, i: int) -> int:
        """Where a stage's i-th latent is among all latents in coding order (the order of the
        model's rates)."""
        return sum(self.latents_per_stage[:stage]) + i

    def stage_channels(self, stage: int) -> tuple[int, ...]:
        """The channels of each latent of a stage, in coding order."""
        channels, count = self.latent_channels[stage], self.latents_per_stage[stage]
        if isinstance(channels, int):
            return (channels,) * count
        if len(channels) != count:
            raise ValueError(f"stage {stage}: {len(channels)} latent widths for {count} latents")
        return tuple(channels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BGVAEConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**{k: _tuples(v) for k, v in d.items()})


def _tuples(value):
    """JSON lists back to (nested) tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def uneven_groups(total: int, count: int, exponent: float = 1.7) -> tuple[int, ...]:
    """``total`` channels split into ``count`` growing groups, the i-th ∝ i^exponent (floored,
    the remainder to the last): the first latents are cheap context for the later ones
    ("Causal Context Adjustment Loss for Learned Image Compression").

    >>> uneven_groups(320, 5)
    (8, 28, 56, 92, 136)
    """
    weights = [(i + 1) ** exponent for i in range(count)]
    sizes = [math.floor(total * w / sum(weights)) for w in weights]
    sizes[-1] += total - sum(sizes)
    return tuple(sizes)


# What 2 CPU cores can train: 6.40 M parameters (plus 0.14 M in the shallow synthesis).
# The stride-8 path is 64 channels wide with 16 channels per latent: narrower, it capped
# Kodak's PSNR (docs/DESIGN.md, `small` config).
SMALL = BGVAEConfig(
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
    head_bias="shared",
)

CONFIGS: dict[str, BGVAEConfig] = {
    # The published layout, for GPU users: 95.7 M parameters (the paper reports 97.4 M; its
    # cross-attention design is not public, ours has no MLP, see docs/DESIGN.md).
    "paper": BGVAEConfig(),
    "small": SMALL,
    # `small` with the 48 channels of its stride-8 latents in growing groups of 4, 14 and 30
    # (uneven_groups) instead of 16 each: the experiment of uneven channel groups.
    "small-uneven": dataclasses.replace(SMALL, latent_channels=(16, 16, 32, uneven_groups(48, 3))),
    # `small` whose full synthesis makes no detail from a locally constant feature: the flat-colour experiment.
    "small-dc-free": dataclasses.replace(SMALL, dc_free_detail=True),
    # `small` with its stride-8 latents coded in checkerboard halves: the spatial-context experiment.
    "small-checkerboard": dataclasses.replace(SMALL, checkerboard=(False, False, False, True)),
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
        head_bias="shared",
    ),
}


EFFORT_ITERATIONS = {0: 0, 1: 25, 2: 100, 3: 400}
"""--effort level → SGA iterations (bgcodec.sga); 0 is the plain (amortised) encoder."""

TILE_SIZE = 1024
"""The encoder codes an image larger than this on either side as independent tiles of at
most TILE_SIZE² pixels (bgcodec.container.tile_boxes): memory is bounded by one tile,
which SGA (2 GiB per megapixel) can still afford, and Kodak-sized photos stay one tile."""

DEVICES = ("auto", "cpu", "cuda")
"""Where the model may run; auto means CUDA when available."""


DEFAULT_WEIGHTS = "bgvae-small.safetensors"
"""What the CLI loads without --weights: the shipped file in weights/."""

WEIGHTS_ENV = "BGCODEC_WEIGHTS"
"""An environment variable that names the weights when --weights is not given."""


def cli_lambda_range(cfg: BGVAEConfig) -> tuple[float, float]:
    """The config's λ range in the CLI (CompressAI) convention."""
    lo, hi = cfg.lmbda_range
    return lambdas.to_cli(lo), lambdas.to_cli(hi)


def search_dirs() -> list[Path]:
    """Where a bare weights file name is looked up: the source checkout, then the install prefix."""
    return [Path(__file__).resolve().parent.parent / "weights", Path(sys.prefix) / "share" / "bgcodec" / "weights"]


def resolve(spec: str | None) -> str:
    """Turn a --weights value (None = default) into a path or a ``random:`` spec."""
    spec = spec or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS
    if spec.startswith("random:") or os.sep in spec or os.path.exists(spec):
        return spec
    for folder in search_dirs():
        if (folder / spec).is_file():
            return str(folder / spec)
    return spec


def lambda_range(spec: str | None = None) -> tuple[float, float]:
    """The λ range (CLI convention) of the weights a spec names, from the file's metadata
    alone: no model is built, so a wrong λ is refused at once."""
    spec = resolve(spec)
    if spec.startswith("random:"):
        name = spec.split(":")[1]
        if name not in CONFIGS:
            raise WeightsError(f"{spec}: expected random:CONFIG[:SEED] with CONFIG in {sorted(CONFIGS)}")
        return cli_lambda_range(CONFIGS[name])
    if not os.path.isfile(spec):
        raise WeightsError(f"{spec}: weights file not found")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(spec, framework="numpy") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{spec}: not a safetensors weights file ({e})") from None
    return declared_lambda_range(spec, metadata)


def declared_lambda_range(path: str, metadata: dict[str, str]) -> tuple[float, float]:
    """The λ range (CLI convention) a weights file's metadata declares."""
    try:
        lo, hi = (float(v) for v in json.loads(metadata["lambda_range"]))
    except (KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: weights metadata lacks a valid lambda_range ({e})") from None
    return lo, hi
