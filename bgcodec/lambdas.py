"""The one place where λ conventions meet.

On the command line and in the API, λ follows the CompressAI convention:
``loss = bpp + λ·255²·MSE`` with MSE on the [0, 1] pixel scale, so ``-l 0.01``
means what CompressAI users expect.

Inside the model (QARV's convention) the loss is
``nats per sub-pixel + λ_model·MSE`` with MSE on the [-1, 1] scale.  Equating
the two objectives gives ``λ_cli = λ_model · 4·3·log2(e) / 255²``.

This module imports neither torch nor numpy: ``bgcodec info`` uses it.
"""

import math
import numbers

from .errors import BgcodecError

BITS_PER_NAT = math.log2(math.e)

CLI_PER_MODEL = 4 * 3 * BITS_PER_NAT / 255**2
"""λ_cli / λ_model (≈ 2.662e-4)."""

DEFAULT_QUALITY = 75.0
"""The quality of ``bgcodec encode`` and ``bgcodec.compress`` when neither λ nor quality is given."""

SAMPLINGS = ("cube-root", "log-uniform", "log-middle")
"""How training draws λ per crop (bgcodec.train.loop.sample_lambdas)."""

VALIDATION_LAMBDAS = (0.0017, 0.0067, 0.0483, 0.2)
"""CLI-convention λ of training's periodic validation (the points of the shipped training curve)."""


def to_model(lmbda_cli: float) -> float:
    """Convert a CompressAI-convention λ to the model's internal λ."""
    return lmbda_cli / CLI_PER_MODEL


def to_cli(lmbda_model: float) -> float:
    """Convert the model's internal λ to the CompressAI convention."""
    return lmbda_model * CLI_PER_MODEL


RANGE_TOLERANCE = 1e-6
"""Relative slack at the ends of a weights file's λ range (its ends are stored rounded)."""


def check_in_range(lmbda: object, cli_range: tuple[float, float]) -> None:
    """Raise BgcodecError unless ``lmbda`` is a real number within ``cli_range`` (CLI convention).

    >>> check_in_range(0.01, (0.0003, 0.55))
    >>> check_in_range(5, (0.0003, 0.55))
    Traceback (most recent call last):
    ...
    bgcodec.errors.BgcodecError: λ=5 is outside the range these weights were trained for (0.0003 to 0.55)
    """
    if not isinstance(lmbda, numbers.Real) or isinstance(lmbda, bool):
        raise BgcodecError(f"λ must be a number, not {type(lmbda).__name__} {lmbda!r}")
    lo, hi = cli_range
    if not (lo * (1 - RANGE_TOLERANCE) <= lmbda <= hi * (1 + RANGE_TOLERANCE)):
        raise BgcodecError(f"λ={lmbda:g} is outside the range these weights were trained for ({lo:.4g} to {hi:.4g})")


def quality_to_lambda(quality: float, cli_range: tuple[float, float]) -> float:
    """Map quality 1..100 log-linearly onto the checkpoint's λ range (CLI convention).

    Quality 1 gives the smallest λ (fewest bits), 100 the largest.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    lo, hi = cli_range
    t = (quality - 1) / 99
    return math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))
