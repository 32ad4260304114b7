"""The information-theoretic regulariser (--it-weight): the source model q_φ(x | x̂) and the
two-step alternation."""

import math

import pytest
import torch

from bgcodec.config import CONFIGS
from bgcodec.errors import BgcodecError
from bgcodec.model import BGVAE
from bgcodec.train.loop import objective, rate_distortion
from bgcodec.train import source_model
from bgcodec.train.source_model import SourceModel, SourceRegulariser

from test_training import options

TINY = CONFIGS["tiny"]


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    im = torch.rand(2, 3, 64, 64, generator=g).mul(255).round().div(255)
    return im, torch.tensor([4.0, 300.0])


def test_the_source_model_learns_the_likelihood_of_x_given_x_hat():
    torch.manual_seed(0)
    im, lmbda = batch()
    x = 2 * im - 1
    x_hat = x + 0.015 * torch.randn_like(x)  # an error of about 2 levels, below the initial scale
    regulariser = SourceRegulariser(SourceModel(TINY.lmbda_range), weight=1.0, lr=3e-3)
    first = regulariser.fit(x, x_hat, lmbda).item()
    for _ in range(300):
        last = regulariser.fit(x, x_hat, lmbda).item()
    ideal = 0.5 * math.log(2 * math.pi * math.e * (0.015 / (2 / 255)) ** 2)  # differential entropy, in levels
    assert last < first - 1.0
    assert abs(last - ideal) < 0.25


def test_no_gradient_reaches_the_source_model_in_the_codec_step_nor_the_codec_in_its_own():
    torch.manual_seed(1)
    model = BGVAE(TINY)
    regulariser = SourceRegulariser(SourceModel(TINY.lmbda_range), weight=0.5, lr=1e-3)
    im, lmbda = batch(1)
    out, rates = model(im, lmbda)
    before = [p.detach().clone() for p in regulariser.model.parameters()]
    term = regulariser.term(out, rates, im, lmbda)
    assert all(p.grad is None for p in model.parameters())  # the source model's step left the codec alone
    fitted = [p.detach().clone() for p in regulariser.model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, fitted))
    for p in regulariser.model.parameters():
        p.grad = None
    (rate_distortion(out, rates, im, lmbda)["loss"] + term["penalty"]).backward()
    assert all(p.grad is None for p in regulariser.model.parameters())
    assert model.synthesis.head[0].weight.grad.abs().sum() > 0


def test_the_codec_weight_rises_over_the_first_fits_and_the_likelihood_is_floored(monkeypatch):
    monkeypatch.setattr(source_model, "FIT_WARMUP", 2)
    im, lmbda = batch(3)
    x = 2 * im - 1
    regulariser = SourceRegulariser(SourceModel(TINY.lmbda_range), weight=1.0, lr=1e-3)
    penalties = []
    for _ in range(3):
        penalties.append(regulariser.penalty(x, x, lmbda).item() / -regulariser.model(x, x, lmbda).mean().item())
        regulariser.fit(x, x, lmbda)
    assert penalties == pytest.approx([0.0, 0.5, 1.0])
    far = regulariser.model(x, -x, lmbda)  # errors of up to 255 levels, far past the scale
    assert far.max().item() <= -source_model.LOG_LIKELIHOOD_FLOOR + 1e-6


def test_weight_zero_gives_the_plain_loss_exactly():
    im, lmbda = batch(2)
    opts = options("unused", "unused")
    torch.manual_seed(2)
    model = BGVAE(TINY)
    regulariser = SourceRegulariser(SourceModel(TINY.lmbda_range), weight=0.0, lr=1e-3)
    torch.manual_seed(5)  # the same training noise for both
    plain = objective(model, None, im, lmbda, opts)["loss"]
    torch.manual_seed(5)
    regularised = objective(model, None, im, lmbda, opts, [regulariser])
    assert torch.equal(plain, regularised["loss"])
    assert regularised["source_bpp"] > 0


def test_the_regulariser_is_refused_where_it_has_no_meaning():
    for other in ({"shallow_only": True}, {"bound": True}):
        with pytest.raises(BgcodecError, match="--it-weight"):
            options("unused", "unused", it_weight=0.1, **other).check()
