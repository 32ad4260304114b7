"""SGA iterative encoding (bgcodec.sga) and its use by the codec."""

import numpy as np
import pytest
import torch

from bgcodec import container, sga
from bgcodec.config import EFFORT_ITERATIONS
from helpers import encode_latents
from test_codec import perturbed_codec, random_image, smooth_image

LMBDA = 0.01


def test_temperature_schedule_holds_then_decays_to_about_0_13():
    n = 400
    taus = [sga.temperature(t, n) for t in range(n)]
    assert taus[0] == taus[int(0.1 * n)] == 0.5
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    assert 0.11 < taus[-1] < 0.14


def test_relaxed_round_stays_between_floor_and_ceil():
    w = torch.linspace(-3.7, 3.7, 10_001)
    for tau in (0.5, 0.1):
        r = sga.relaxed_round(w, tau, torch.Generator().manual_seed(0))
        assert (r >= torch.floor(w) - 1e-6).all() and (r <= torch.ceil(w) + 1e-6).all()


def test_relaxed_round_approaches_rounding_as_temperature_falls():
    w = torch.rand(20_000, generator=torch.Generator().manual_seed(1)) * 6 - 3
    errors = [(sga.relaxed_round(w, tau, torch.Generator().manual_seed(2)) - torch.round(w)).abs().mean().item()
              for tau in (0.5, 0.2, 0.02)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02


def test_relaxed_round_has_gradients():
    w = torch.tensor([0.3, 1.6, -2.2], requires_grad=True)
    sga.relaxed_round(w, 0.3, torch.Generator().manual_seed(0)).sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_without_iterations_the_residuals_are_the_encoders_own():
    from bgcodec import lambdas
    from bgcodec.codec import image_to_tensor

    codec = perturbed_codec()
    model = codec.model
    x = image_to_tensor(smooth_image(64, 64, seed=4))
    lmbda = torch.tensor([lambdas.to_model(LMBDA)])
    taps = model.analyse(x, lmbda)
    residuals = sga.optimise_latents(model, x, taps, lmbda, iterations=0)
    own, _, _ = encode_latents(model, taps, lmbda)
    assert len(own) == len(residuals) == model.cfg.num_latents
    assert any(np.abs(k).sum() > 0 for k in own)
    for a, b in zip(own, residuals):
        np.testing.assert_array_equal(a, torch.round(b).numpy())


def _rd_cost(image, data, decoded, lmbda_cli):
    bpp = 8 * len(data) / (image.shape[0] * image.shape[1])
    mse = np.mean((decoded.astype(np.float64) - image) ** 2)
    return bpp + lmbda_cli * mse


@pytest.mark.slow
@pytest.mark.parametrize("synthesis", ["full", "shallow"])
def test_effort_lowers_the_rate_distortion_cost_and_decodes_exactly(synthesis):
    codec = perturbed_codec()
    image = smooth_image(64, 96, seed=3)
    costs = []
    for effort in (0, 1):
        data, recon = codec.encode(image, LMBDA, synthesis=synthesis, effort=effort, return_reconstruction=True)
        decoded = codec.decode(data)
        assert np.array_equal(decoded, recon)
        assert container.unpack(data)[0].synthesis == synthesis
        costs.append(_rd_cost(image, data, decoded, LMBDA))
    assert costs[1] < costs[0], costs


@pytest.mark.slow
def test_effort_reports_progress_and_is_reproducible():
    codec = perturbed_codec()
    image = random_image(40, 70, seed=5)
    calls = []
    first = codec.encode(image, LMBDA, effort=1, progress=lambda n, total, label: calls.append((n, total)))
    assert calls == [(n, EFFORT_ITERATIONS[1]) for n in range(1, EFFORT_ITERATIONS[1] + 1)]
    assert codec.encode(image, LMBDA, effort=1) == first


def test_unknown_effort_is_an_error():
    from bgcodec.errors import BgcodecError

    with pytest.raises(BgcodecError, match="effort"):
        perturbed_codec().encode(random_image(8, 8), LMBDA, effort=7)


def test_effort_codes_a_tiled_image_tile_by_tile():
    codec = perturbed_codec()
    image = random_image(70, 40)
    reports = []
    data, reconstruction = codec.encode(image, LMBDA, effort=1, tile_size=64, lossless_fallback=False,
                                        return_reconstruction=True, progress=lambda *report: reports.append(report))
    assert len(container.unpack(data)[0].tiles) == 2
    iterations = EFFORT_ITERATIONS[1]
    assert [done for done, _, _ in reports] == list(range(1, 2 * iterations + 1))
    assert reports[-1] == (2 * iterations, 2 * iterations, "tile 2/2")
    assert np.array_equal(codec.decode(data), reconstruction)
