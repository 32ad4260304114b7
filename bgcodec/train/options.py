"""What a training run is configured by: one dataclass whose fields carry their own help,
choices and bounds, so that ``bgcodec train`` derives its options from it.

Imports neither torch nor click, so the command line can build its options cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import lambdas
from ..config import CONFIGS, DEVICES
from ..errors import BgcodecError


def setting(default: Any, help: str, **cli: Any) -> Any:
    """A TrainOptions field with its command-line description. ``cli`` may hold ``choices``,
    ``min`` and ``max`` (bounds, ``min_open``/``max_open`` for open ones), ``metavar``, ``hidden``
    (not on the command line) and ``path`` ("dir" for an existing folder)."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **cli})
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainOptions:
    data: list[str]
    out: str
    config: str = setting("small", "Model size.", choices=tuple(CONFIGS))
    steps: int = setting(100_000, "Total steps.", min=1)
    batch_size: int = setting(16, "Crops per step (per GPU).", min=1)
    crop: int = setting(128, "Crop size in pixels.", min=64)
    lr: float = setting(2e-4, "Peak learning rate (Adam).")
    warmup_steps: int = setting(500, "Linear LR warm-up.", min=1)
    grad_clip: float = setting(2.0, "Gradient-norm clipping.", hidden=True)
    ema_decay: float = setting(0.999, "EMA decay of the exported weights.", min=0, max=1, max_open=True)
    lambda_sampling: str = setting(
        "cube-root", "How λ is drawn per crop: uniform in λ^(1/3) (QARV's; favours high rates), log-uniform "
        "(equal weight per octave; more steps at low rates) or log-middle (log-uniform with 3/4 of the crops in "
        "the middle half of the octaves). The bound model always samples log-uniform.", choices=lambdas.SAMPLINGS)
    seed: int = setting(0, "Random seed.")
    synthetic_share: float = setting(0.0, "Share of the crops that are generated pictures of flat colour, "
                                     "shading, soft focus and line art (bgcodec.train.synthetic) instead of crops "
                                     "of the data.", min=0, max=1)
    dc_free_ramp: int = setting(0, "With a dc_free_detail config: take the mean out of its zero-sum filters "
                                "gradually over the first this many steps, so that weights from a plain head and "
                                "upsampling (--init) adapt instead of starting several dB worse; 0: at once.", min=0)
    downscale_jpeg: bool = setting(False, "Halve JPEG sources before cropping (removes JPEG artefacts).")
    device: str = setting("auto", "Where to train; auto uses CUDA when available.", choices=DEVICES)
    threads: int | None = setting(None, "CPU threads (default: torch's).", min=1)
    bf16: bool = setting(False, "bf16 autocast (CUDA).")
    compile: bool = setting(False, "torch.compile the training step; the first step compiles for minutes (needs "
                            "a C++ compiler on CPU).")
    resume: bool = setting(False, "Continue from the run directory's checkpoint.")
    init: str | None = setting(None, "Start from a weights file, with a fresh optimizer: tensors that match are "
                               "copied, those of a narrower config are grown into the wider layers, the rest are "
                               "listed and start fresh.", metavar="WEIGHTS")
    val_dir: str | None = setting(None, "Images for periodic validation with real bitstreams (the first "
                                  "--val-images).", path="dir")
    val_images: int = setting(3, "How many images of --val-dir to validate on.", min=1)
    val_lambdas: list[float] = setting(lambdas.VALIDATION_LAMBDAS, "Lambdas (CompressAI convention) of the "
                                       "periodic validation.", metavar="L1,L2,...")
    val_every: int = setting(2000, "Validate every this many steps.", min=1)
    log_every: int = setting(50, "Log every this many steps.", min=1)
    checkpoint_minutes: float = setting(5.0, "Save a checkpoint every this many minutes.", min=0.1)
    minutes: float | None = setting(None, "Train for at most this many minutes (of this process): at every log "
                                    "line --steps is lowered to the steps that fit at the rate of the last "
                                    "log window, so the learning-rate schedule ends in time.", min=0,
                                    min_open=True)
    shallow_only: bool = setting(False, "Train only the shallow synthesis, against the frozen model from --init "
                                 "(run it after the main training; the main training leaves the shallow synthesis "
                                 "untouched).")
    bound: bool = setting(False, "Train the rate-distortion bound model (the teacher of --teacher) instead of "
                          "the codec.")
    teacher: str | None = setting(None, "Guide the codec by this frozen bound model (feature affinities and "
                                  "reconstruction).", metavar="BOUND_WEIGHTS")
    feature_weight: float = setting(1.0, "Weight of the feature-affinity guidance loss (with --teacher).", min=0)
    it_weight: float = setting(0.0, "Weight α of the information-theoretic regulariser: the loss subtracts α times "
                               "the conditional source entropy H(X | X̂), estimated by a source model trained "
                               "alongside (bgcodec.train.source_model; 0 = off).", min=0)
    it_lr: float = setting(1e-3, "Learning rate of that source model (Adam).", min=0, min_open=True)
    cca_weight: float = setting(0.0, "Weight α of the causal-context-adjustment loss: α times the rate of each "
                                "latent under its prior minus its rate under an auxiliary prior that does not see "
                                "the latent before it in its stage, that saving capped at the earlier latent's rate "
                                "(bgcodec.train.cca; 0 = off).", min=0)
    cca_lr: float = setting(1e-4, "Learning rate of those auxiliary priors (Adam).", min=0, min_open=True)
    reconstruction_weight: float = setting(1.0, "Weight of the teacher-reconstruction loss (with --teacher).",
                                           min=0)

    @property
    def sampled_lambdas(self) -> str:
        """The λ sampling in effect: the bound model always samples log-uniform."""
        return "log-uniform" if self.bound else self.lambda_sampling

    def check(self) -> None:
        """Reject combinations that have no meaning."""
        if self.bound and (self.teacher or self.shallow_only):
            raise BgcodecError("--bound trains the teacher itself: it takes neither --teacher nor --shallow-only")
        for flag, weight in (("--it-weight", self.it_weight), ("--cca-weight", self.cca_weight)):
            if weight and (self.bound or self.shallow_only):
                raise BgcodecError(f"{flag} regularises the codec's whole training; it takes neither --bound nor "
                                   "--shallow-only")
        if self.teacher and self.shallow_only:
            raise BgcodecError("--teacher guides the whole codec; --shallow-only trains only its shallow synthesis")


def settings() -> list[dataclasses.Field]:
    """The fields of TrainOptions that are command-line options, in order."""
    return [f for f in dataclasses.fields(TrainOptions) if "help" in f.metadata and not f.metadata.get("hidden")]
