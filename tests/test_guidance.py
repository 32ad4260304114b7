"""The bound model (teacher) and bound-guided training."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from bgcodec.bound import BoundVAE, GaussianLatentBlock, gaussian_kl
from bgcodec.cli import cli
from bgcodec.train.curves import bound_curve, bound_gaps, psnr_at
from bgcodec.errors import WeightsError
from bgcodec.train.guidance import (GuidedStudent, affinity, affinity_distance, captured_features, feature_widths,
                              guidance_loss, teacher_targets)
from bgcodec.config import CONFIGS
from bgcodec.model import BGVAE
from bgcodec.train.loop import objective, train
from bgcodec.train.options import TrainOptions
from bgcodec.weights import load_bound_model, load_model, save_model

TINY = CONFIGS["tiny"]


def tiny_bound(seed=0):
    torch.manual_seed(seed)
    return BoundVAE(TINY).eval()


def tiny_student(seed=1):
    torch.manual_seed(seed)
    return BGVAE(TINY)


# -- the affinity matrix -----------------------------------------------------------------

def test_affinity_is_symmetric_with_unit_diagonal():
    f = torch.randn(2, 8, 5, 7)
    a = affinity(f)
    assert a.shape == (2, 35, 35)
    torch.testing.assert_close(a, a.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(a, dim1=1, dim2=2), torch.ones(2, 35))
    assert a.abs().max() <= 1 + 1e-5


def test_affinity_ignores_the_scale_of_the_features():
    f = torch.randn(2, 8, 4, 4)
    per_position = torch.rand(2, 1, 4, 4) * 10 + 0.1
    torch.testing.assert_close(affinity(f * 3.7), affinity(f))
    torch.testing.assert_close(affinity(f * per_position), affinity(f), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(affinity(f), affinity(torch.randn(2, 8, 4, 4)))


def test_affinity_distance_is_zero_only_for_equal_matrices():
    a = affinity(torch.randn(2, 8, 4, 4))
    b = affinity(torch.randn(2, 8, 4, 4))
    assert float(affinity_distance(a, a)) == pytest.approx(0, abs=1e-6)
    assert float(affinity_distance(a, b)) > 0.1


# -- the bound model ---------------------------------------------------------------------

def test_gaussian_kl_is_zero_for_equal_distributions_and_positive_otherwise():
    log_scale = torch.randn(100)
    torch.testing.assert_close(gaussian_kl(torch.zeros(100), log_scale, log_scale), torch.zeros(100))
    assert (gaussian_kl(torch.full((100,), 0.5), log_scale, log_scale + 0.7) > 0).all()
    # the closed form for N(1, 0.5²) against N(0, 2²)
    kl = gaussian_kl(torch.tensor(1.0), torch.tensor(math.log(0.5)), torch.tensor(math.log(2.0)))
    assert float(kl) == pytest.approx(math.log(4) + (0.25 + 1) / 8 - 0.5)


def test_a_fresh_bound_block_has_a_posterior_no_wider_than_its_prior_and_little_rate_where_q_is_p():
    block = GaussianLatentBlock(16, 4, 16, 3, 2.0)
    h, tap, emb = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4), torch.randn(2, 256)
    ratio = torch.zeros(2)
    with torch.no_grad():
        block.posterior.weight.zero_()   # μq = 0 = the prior mean of a fresh prior conv
        block.prior.weight.zero_()
        block.prior.bias[4:].fill_(-3.0)  # σp at its floor, below Δ/√12: then q ≈ p
        _, kl_narrow = block(h, tap, emb, ratio, sample=False)
        block.prior.bias[4:].fill_(3.0)   # σp far above: σq ≈ Δ/√12, and a positive rate
        _, kl_wide = block(h, tap, emb, ratio, sample=False)
    assert (kl_narrow < 0.14 * 64).all() and (kl_wide > 1.0 * 64).all()


def test_bound_model_returns_a_reconstruction_and_a_kl_per_latent():
    model = tiny_bound()
    out, kls = model(torch.rand(2, 3, 128, 64), torch.tensor([10.0, 1000.0]))
    assert out.shape == (2, 3, 128, 64)
    assert len(kls) == TINY.num_latents and all(k.shape == (2,) and (k >= 0).all() for k in kls)
    # z = μq is deterministic; posterior samples are not
    im, lam = torch.rand(1, 3, 64, 64), torch.tensor([100.0])
    torch.testing.assert_close(model(im, lam, sample=False)[0], model(im, lam, sample=False)[0])
    assert not torch.equal(model(im, lam, sample=True)[0], model(im, lam, sample=True)[0])


@pytest.mark.slow
def test_bound_weights_load_as_a_bound_model_and_never_as_a_codec(tmp_path):
    model = tiny_bound()
    path = tmp_path / "bound.safetensors"
    save_model(model, path)
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["model"] == "bound"
    loaded = load_bound_model(str(path))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    with pytest.raises(WeightsError, match="bound") as info:
        load_model(str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    codec_path = tmp_path / "codec.safetensors"
    save_model(tiny_student(), codec_path)
    with pytest.raises(WeightsError, match="not a 'bound' model"):
        load_bound_model(str(codec_path))


def test_bound_curve_reports_kl_bits_and_reconstruction_psnr():
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    rows = bound_curve(tiny_bound(), [image], [0.001, 0.1])
    assert [r["lambda"] for r in rows] == [0.001, 0.1]
    assert all(math.isfinite(r["bpp"]) and r["bpp"] > 0 and math.isfinite(r["psnr"]) for r in rows)


def test_gaps_interpolate_in_log_bpp_and_stay_inside_the_curves():
    codec = [{"bpp": 0.25, "psnr": 28.0}, {"bpp": 1.0, "psnr": 34.0}]
    bound = [{"bpp": 0.2, "psnr": 30.0}, {"bpp": 0.8, "psnr": 36.0}]
    assert psnr_at(codec, 0.5) == pytest.approx(31.0)
    gaps = bound_gaps(bound, codec)
    assert gaps[0.25] == pytest.approx(30 + 6 * math.log(1.25) / math.log(4) - 28)
    assert gaps[1.0] is None


# -- guidance ------------------------------------------------------------------------------

def test_features_are_taken_at_the_eight_resolution_changes():
    student = tiny_student()
    with captured_features(student) as features:
        student(torch.rand(1, 3, 128, 128), torch.tensor([100.0]))
    strides = [128 // f.shape[2] for f in features]
    assert strides == [8, 16, 32, 64, 64, 32, 16, 8]
    assert [f.shape[1] for f in features] == feature_widths(student)
    # hooks are removed afterwards
    with captured_features(student) as again:
        pass
    student(torch.rand(1, 3, 64, 64), torch.tensor([100.0]))
    assert again == []


@pytest.mark.slow
def test_the_teacher_gets_no_gradient_and_the_student_and_projectors_do():
    teacher = tiny_bound().requires_grad_(False)
    guided = GuidedStudent(tiny_student()).train()
    opts = TrainOptions(data=[], out="", teacher="x")
    stats = objective(guided, teacher, torch.rand(2, 3, 64, 64), torch.tensor([20.0, 500.0]), opts)
    stats["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in guided.projectors.parameters())
    assert guided.student.encoder.stem.weight.grad is not None
    assert stats["feature_loss"] > 0 and stats["teacher_mse"] > 0


@pytest.mark.slow
def test_guidance_loss_decreases_when_a_student_overfits_its_teacher():
    teacher = tiny_bound().requires_grad_(False)
    guided = GuidedStudent(tiny_student()).train()
    im, lam = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)), torch.tensor([50.0, 400.0])
    targets = teacher_targets(teacher, im, lam)
    optimizer = torch.optim.Adam(guided.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        out, _, features = guided(im, lam)
        feature_loss, reconstruction_loss = guidance_loss(targets, out, features)
        loss = feature_loss + reconstruction_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# -- training and the commands ---------------------------------------------------------------

def test_option_combinations_without_meaning_are_refused():
    with pytest.raises(Exception, match="--bound"):
        TrainOptions(data=[], out="", bound=True, teacher="t.safetensors").check()
    with pytest.raises(Exception, match="--shallow-only"):
        TrainOptions(data=[], out="", teacher="t.safetensors", shallow_only=True).check()


@pytest.fixture(scope="module")
def trained_bound(tmp_path_factory, image_dir):
    out = tmp_path_factory.mktemp("bound")
    opts = TrainOptions(data=[str(image_dir)], out=str(out), config="tiny", steps=2, batch_size=2, crop=64,
                        warmup_steps=1, log_every=1, threads=1, bound=True, val_dir=str(image_dir),
                        val_images=1, val_every=2, val_lambdas=[0.01])
    return train(opts, log=lambda s: None)


@pytest.mark.slow
def test_train_bound_exports_a_bound_model_and_validates_with_its_kl(trained_bound):
    with safe_open(str(trained_bound), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "bound" and json.loads(meta["training"])["steps"] == 2
    assert isinstance(load_bound_model(str(trained_bound)), BoundVAE)
    assert (trained_bound.parent / "val.csv").read_text().count("\n") == 2


@pytest.mark.slow
def test_guided_training_runs_resumes_and_exports_only_the_codec(tmp_path, image_dir, trained_bound):
    opts = TrainOptions(data=[str(image_dir)], out=str(tmp_path), config="tiny", steps=2, batch_size=2, crop=64,
                        warmup_steps=1, log_every=1, threads=1, teacher=str(trained_bound))
    weights = train(opts, log=lambda s: None)
    header = (tmp_path / "log.csv").read_text().splitlines()[0]
    assert "feature_loss" in header and "teacher_mse" in header
    loaded = load_model(str(weights))  # a codec file: no projector tensors in it
    assert json.loads(loaded.metadata["training"])["teacher"] == str(trained_bound)
    opts.steps, opts.resume = 3, True
    lines = []
    train(opts, log=lines.append)
    assert any("resumed" in line and "step 2" in line for line in lines)


def test_guided_training_refuses_a_teacher_of_another_config(tmp_path, image_dir, trained_bound):
    result = CliRunner().invoke(cli, ["train", str(image_dir), "-o", str(tmp_path), "--config", "small",
                                      "--steps", "1", "--teacher", str(trained_bound)])
    assert result.exit_code != 0
    assert "config differs" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_bound_command_prints_both_curves_and_the_gap(tmp_path, image_dir, trained_bound):
    result = CliRunner().invoke(cli, ["bound", str(trained_bound), str(image_dir), "--weights", "random:tiny",
                                      "--lambdas", "0.005,0.5", "--limit", "2", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "bound bpp (KL)" in result.output and "codec PSNR" in result.output and "Gap" in result.output
    assert (tmp_path / "bound.md").read_text().count("| 0.") >= 2
    saved = json.loads((tmp_path / "bound.json").read_text())
    assert len(saved["bound"]) == len(saved["codec"]) == 2


def test_bound_command_rejects_codec_weights_in_one_line(tmp_path, image_dir):
    path = tmp_path / "codec.safetensors"
    save_model(tiny_student(), path)
    result = CliRunner().invoke(cli, ["bound", str(path), str(image_dir), "--no-codec"])
    assert result.exit_code != 0
    assert "not a 'bound' model" in result.output and "Traceback" not in result.output
