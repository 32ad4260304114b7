"""Tests for bgcodec.model: shapes, rates, λ conditioning, gradients, configs, coding paths."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from bgcodec.config import CONFIGS, BGVAEConfig
from bgcodec.model import (BGVAE, LOG_SIGMA_FLOOR, SHALLOW_SYNTHESES, checkerboard_merge, checkerboard_split,
                           count_parameters, gaussian_log_likelihood)
from bgcodec.weights import load_model
from helpers import encode_latents, perturb

LMBDA = 128.0  # model convention


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:tiny").model


@pytest.fixture(scope="module")
def tiny_lively():
    return perturb(load_model("random:tiny").model)


def _image(b=1, h=64, w=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def _lmbda(*values):
    return torch.tensor(values, dtype=torch.float32)


# -- forward --------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_forward_shapes_and_rates(config):
    model = load_model(f"random:{config}").model
    x = _image(2)
    with torch.no_grad():
        out, rates = model(x, _lmbda(16.0, 2048.0), noisy=False)
    assert out.shape == x.shape
    assert len(rates) == 9 == model.cfg.num_latents
    for i, r in enumerate(rates):
        assert r.shape == (2,), i
        assert torch.isfinite(r).all(), i
        assert (r > 0).all(), (i, r)
    assert torch.isfinite(out).all()


def test_noisy_vs_quantised(tiny_lively):
    x = _image()
    lm = _lmbda(LMBDA)
    with torch.no_grad():
        torch.manual_seed(1)
        out_n1, rates_n1 = tiny_lively(x, lm, noisy=True)
        out_n2, rates_n2 = tiny_lively(x, lm, noisy=True)
        torch.manual_seed(1)
        out_n3, _ = tiny_lively(x, lm, noisy=True)
        out_q1, rates_q1 = tiny_lively(x, lm, noisy=False)
        torch.manual_seed(99)
        out_q2, rates_q2 = tiny_lively(x, lm, noisy=False)
    assert not torch.equal(out_n1, out_n2)
    assert any(not torch.equal(a, b) for a, b in zip(rates_n1, rates_n2))
    assert torch.equal(out_n1, out_n3)  # same RNG state, same noise
    assert torch.equal(out_q1, out_q2)
    assert all(torch.equal(a, b) for a, b in zip(rates_q1, rates_q2))


def test_noisy_defaults_to_training_mode():
    model = perturb(load_model("random:tiny").model)
    x, lm = _image(), _lmbda(LMBDA)
    with torch.no_grad():
        model.eval()
        a, _ = model(x, lm)
        b, _ = model(x, lm)
        assert torch.equal(a, b)
        model.train()
        c, _ = model(x, lm)
        d, _ = model(x, lm)
        assert not torch.equal(c, d)


def test_lambda_changes_reconstruction(tiny_lively):
    x = _image().expand(2, -1, -1, -1)
    lm = _lmbda(16.0, 2048.0)
    with torch.no_grad():
        out, rates = tiny_lively(x, lm, noisy=False)
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert any(not torch.allclose(r[0], r[1]) for r in rates)
    # Each row depends only on its own λ.
    with torch.no_grad():
        single, _ = tiny_lively(x[:1], lm[1:])
    torch.testing.assert_close(single[0], out[1], atol=1e-4, rtol=1e-4)


def test_gradients_reach_every_parameter():
    model = load_model("random:tiny").model.train()
    x = _image(2)
    lm = _lmbda(32.0, 1024.0)
    out, rates = model(x, lm)
    mse = (out - (2 * x - 1)).pow(2).mean(dim=(1, 2, 3))
    loss = (sum(rates) / (3 * x.shape[2] * x.shape[3]) + lm * mse).mean()
    loss.backward()
    # The shallow synthesis has its own training stage (train --shallow-only).
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None and not n.startswith("shallow_synthesis.")]
    assert missing == [], f"no gradient for {missing}"
    nonfinite = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert nonfinite == []
    # Spot checks: the encoder, the λ path and the decoder all get non-zero gradients.
    for name in ("encoder.stem.weight", "lambda_embedding.mlp.0.weight", "bias",
                 "stages.0.latents.0.posterior.weight", "synthesis.head.0.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


# -- sizes ------------------------------------------------------------------------------------


def test_small_parameter_count():
    n = count_parameters(BGVAE(CONFIGS["small"]))
    assert 2_000_000 < n < 10_000_000, n


@pytest.mark.slow
def test_paper_config_size_and_forward():
    torch.manual_seed(0)
    model = BGVAE(CONFIGS["paper"]).eval()
    n = count_parameters(model)
    assert 90_000_000 < n < 100_000_000, n
    x = _image(1, 64, 64)
    with torch.no_grad():
        out, rates = model(x, _lmbda(256.0))
    assert out.shape == x.shape
    assert len(rates) == 9 and all(r.shape == (1,) and torch.isfinite(r).all() for r in rates)


# -- likelihood ------------------------------------------------------------------------------


def _ref_log_likelihood(z, mean, log_sigma):
    """Float64 reference with math.erf / math.erfc, same P < 1e-6 rule as the model."""
    sigma = math.exp(log_sigma)
    v = abs(z - mean)
    a, b = (0.5 - v) / sigma, (-0.5 - v) / sigma
    # Φ(a) − Φ(b) = ½(erfc(−a/√2) − erfc(−b/√2)), accurate when both are in the lower tail.
    p = 0.5 * (math.erfc(-a / math.sqrt(2)) - math.erfc(-b / math.sqrt(2)))
    if p < 1e-6:
        return -0.5 * (v / sigma) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
    p_erf = 0.5 * (math.erf(a / math.sqrt(2)) - math.erf(b / math.sqrt(2)))
    assert abs(p_erf - p) < 1e-12
    return math.log(max(p, 1e-8))


CASES = [
    # (z, mean, log_sigma)
    (0.0, 0.0, -2.3), (0.0, 0.0, 0.0), (0.0, 0.0, 3.0), (1.0, 0.2, 0.0), (-3.0, 0.4, 0.5),
    (5.0, -0.3, 1.0), (10.0, 0.0, 2.0), (2.0, 0.0, -2.3), (7.0, 1.5, 0.0), (100.0, 0.0, 0.0),
    (1000.0, 0.0, -2.3), (-1e4, 3.0, 0.7), (1e5, 0.0, 2.9), (42.0, 41.7, -1.0), (-250.0, 250.0, 3.0),
]


@pytest.mark.parametrize("z,mean,log_sigma", CASES)
def test_gaussian_log_likelihood_matches_reference(z, mean, log_sigma):
    got = gaussian_log_likelihood(torch.tensor([z]) - torch.tensor([mean]), torch.tensor([log_sigma]))
    assert got.dtype == torch.float32
    ref = _ref_log_likelihood(float(np.float32(z)), float(np.float32(mean)), float(np.float32(log_sigma)))
    assert torch.isfinite(got).all()
    assert got.item() <= 1e-6
    assert got.item() == pytest.approx(ref, rel=1e-4, abs=2e-4)


@pytest.mark.parametrize("log_sigma", [-2.3, -1.0, 0.0, 1.5, 3.0])
def test_gaussian_log_likelihood_monotone_in_distance(log_sigma):
    v = torch.cat([torch.linspace(0, 20, 2001), torch.logspace(1.31, 6, 200)])
    mean = torch.full_like(v, 0.25)
    for sign in (1.0, -1.0):
        ll = gaussian_log_likelihood((mean + sign * v) - mean, torch.full_like(v, log_sigma))
        assert torch.isfinite(ll).all()
        # Near the mode of a wide prior, P = Φ(a) − Φ(b) is a float32 difference of two
        # numbers near ½: allow its rounding noise (a few 1e-6 relative), nothing more.
        diffs = ll[1:] - ll[:-1]
        assert (diffs <= 1e-5).all(), f"not decreasing at |z-mean| = {v[1:][diffs > 1e-5][:5].tolist()}"
        assert ll[-1] < ll[0]


def test_gaussian_log_likelihood_accepts_other_dtypes():
    z = torch.tensor([0.0, 1.0, 50.0], dtype=torch.float64)
    out = gaussian_log_likelihood(z, torch.zeros(3, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trip(name):
    cfg = CONFIGS[name]
    d = cfg.to_dict()
    assert BGVAEConfig.from_dict(d) == cfg
    # Through JSON (tuples become lists), as the weights metadata stores it.
    assert BGVAEConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert cfg.num_latents == 9


def test_config_rejects_unknown_fields():
    d = CONFIGS["tiny"].to_dict()
    d["dec_width"] = [1, 2]
    with pytest.raises(ValueError, match="dec_width"):
        BGVAEConfig.from_dict(d)


def test_config_partial_dict_uses_defaults():
    assert BGVAEConfig.from_dict({"stride4_depth": 3}) == BGVAEConfig(stride4_depth=3)


def test_model_rejects_wrong_stage_count():
    with pytest.raises(ValueError):
        BGVAE(BGVAEConfig(latents_per_stage=(1, 2, 3)))


def test_quantisation_step_follows_lambda_to_the_minus_half_at_init():
    model = BGVAE(CONFIGS["tiny"])
    latent = model.stages[2].latents[1]
    lo, hi = model.cfg.lmbda_range
    lmbdas = torch.tensor([lo, (lo * hi) ** 0.5, hi])
    _, log_ratio = model.condition(lmbdas)
    steps = torch.exp(latent.log_step(log_ratio))[:, 0, 0, 0]
    torch.testing.assert_close(steps, (lmbdas / (lo * hi) ** 0.5) ** -0.5)


@pytest.mark.parametrize("kind", sorted(SHALLOW_SYNTHESES))
def test_shallow_syntheses_produce_the_image_size(kind):
    import dataclasses

    model = BGVAE(dataclasses.replace(CONFIGS["tiny"], shallow_synthesis=kind))
    out, rates = model(_image(2, 64, 128), _lmbda(LMBDA, LMBDA), noisy=False, synthesis="shallow")
    assert out.shape == (2, 3, 64, 128) and len(rates) == 9
    h, emb, _ = model.latent_features(_image(1, 128, 64), _lmbda(LMBDA), noisy=False)
    assert model.synthesize(h, _lmbda(LMBDA), "shallow").shape == (1, 3, 128, 64)


def test_unknown_shallow_synthesis_is_rejected():
    import dataclasses

    with pytest.raises(ValueError, match="shallow_synthesis"):
        BGVAE(dataclasses.replace(CONFIGS["tiny"], shallow_synthesis="deep"))


# -- coding paths ----------------------------------------------------------------------------


def _analyse(model, seed=0, h=64, w=128):
    lm = _lmbda(LMBDA)
    return model.analyse(_image(1, h, w, seed), lm), lm


def test_encode_latents_shapes_and_dtypes(tiny_lively):
    taps, lm = _analyse(tiny_lively)
    symbols, log_scales, h = encode_latents(tiny_lively, taps, lm)
    cfg = tiny_lively.cfg
    strides = [64] + [32] * 2 + [16] * 3 + [8] * 3
    channels = [c for stage in range(4) for c in cfg.stage_channels(stage)]
    for s, ls, st, c in zip(symbols, log_scales, strides, channels):
        assert s.shape == ls.shape == (1, c, 64 // st, 128 // st)
        assert s.dtype == np.int64 and ls.dtype == np.float32
        assert ls.min() >= LOG_SIGMA_FLOOR
    assert h.shape == (1, cfg.dec_widths[3], 8, 16)


def test_decode_latents_reproduces_encoder(tiny_lively):
    taps, lm = _analyse(tiny_lively, seed=3)
    symbols, log_scales, h_enc = encode_latents(tiny_lively, taps, lm)
    calls = []

    def read_symbols(i, log_scale, encoder_residual):
        calls.append(i)
        assert encoder_residual is None
        np.testing.assert_array_equal(log_scale.numpy(), log_scales[i])
        return torch.from_numpy(symbols[i]).to(log_scale.dtype)

    h_dec = tiny_lively.decode_latents(lm, tuple(taps[0].shape[2:]), read_symbols)
    assert calls == list(range(9))
    assert torch.equal(h_dec, h_enc)


def test_forward_quantised_matches_coding_path(tiny_lively):
    """forward(noisy=False) uses the same quantisation as encode_latents + synthesis."""
    x = _image(1, 64, 128, 5)
    lm = _lmbda(LMBDA)
    with torch.no_grad():
        out, _ = tiny_lively(x, lm, noisy=False)
        _, _, h = encode_latents(tiny_lively, tiny_lively.analyse(x, lm), lm)
        out2 = tiny_lively.synthesize(h, lm)
    torch.testing.assert_close(out, out2, atol=1e-5, rtol=1e-5)


# -- checkerboard context -------------------------------------------------------------------------

TINY_CHECKERBOARD = dataclasses.replace(CONFIGS["tiny"], checkerboard=(False, False, True, True))


def test_checkerboard_halves_merge_back_and_alternate_by_row():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    anchors, others = checkerboard_split(x)
    assert anchors.shape == others.shape == (2, 3, 4, 3)
    assert torch.equal(checkerboard_merge(anchors, others), x)
    y, xs = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    parity = checkerboard_split(((y + xs) % 2).view(1, 1, 4, 6))
    assert parity[0].eq(0).all() and parity[1].eq(1).all()


def test_a_checkerboard_model_starts_as_the_plain_one_and_its_context_then_changes_the_rates():
    plain = perturb(load_model("random:tiny").model).double()
    board = BGVAE(TINY_CHECKERBOARD).double()
    missing, unexpected = board.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(".context." in name for name in missing)
    x, lm = _image(1, 64, 128, 7).double(), _lmbda(LMBDA)
    with torch.no_grad():
        out_plain, rates_plain = plain(x, lm, noisy=False)
        out_board, rates_board = board(x, lm, noisy=False)
        torch.testing.assert_close(out_board, out_plain, rtol=0, atol=1e-12)  # float64; only the sums' order differs
        torch.testing.assert_close(rates_board, rates_plain, rtol=1e-6, atol=0)  # float32 rates, summed per half
        for stage in board.stages[2:]:
            for latent in stage.latents:
                latent.context.weight.normal_(0, 0.5)
        out_context, rates_context = board(x, lm, noisy=False)
    assert len(rates_context) == 9
    torch.testing.assert_close(rates_context[:3], rates_plain[:3], rtol=1e-6, atol=0)  # stages 64 and 32
    assert all(((a - b).abs() > 1e-3 * b).all() for a, b in zip(rates_context[3:], rates_plain[3:]))


def test_the_checkerboard_context_gets_gradients_and_needs_an_even_grid():
    model = BGVAE(TINY_CHECKERBOARD).train()
    x, lm = _image(2), _lmbda(32.0, 1024.0)
    out, rates = model(x, lm)
    (sum(rates).mean() + (out - (2 * x - 1)).pow(2).mean()).backward()
    for stage in model.stages[2:]:
        for latent in stage.latents:
            assert latent.context.weight.grad.abs().sum() > 0
    assert TINY_CHECKERBOARD.num_parts == 9 + 6 and TINY_CHECKERBOARD.parts_of(4) == 5
    with pytest.raises(ValueError, match="stride-64"):
        BGVAE(dataclasses.replace(CONFIGS["tiny"], checkerboard=(True, False, False, False)))
