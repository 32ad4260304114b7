"""The trainer: objective, schedule, checkpoints, resume, --init, DDP on CPU."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bgcodec import lambdas
from bgcodec.train.data import random_crop
from bgcodec.config import CONFIGS
from bgcodec.model import BGVAE
from bgcodec.train.checkpoints import init_from
from bgcodec.train.loop import learning_rate, sample_lambdas, setup, take_step, train
from bgcodec.train.options import TrainOptions
from bgcodec.weights import load_model


def options(image_dir, out, **kw):
    base = dict(data=[str(image_dir)], out=str(out), config="tiny", steps=4, batch_size=2, crop=64,
                warmup_steps=2, log_every=2, threads=1)
    base.update(kw)
    return TrainOptions(**base)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_lambdas_are_drawn_in_range_uniformly_in_cube_root():
    lam = sample_lambdas(20000, 16.0, 2048.0, torch.Generator().manual_seed(0))
    assert lam.min() >= 16 and lam.max() <= 2048
    cube = lam ** (1 / 3)
    mid = (16 ** (1 / 3) + 2048 ** (1 / 3)) / 2
    assert abs(float((cube < mid).float().mean()) - 0.5) < 0.02


def test_log_uniform_lambdas_put_equal_weight_on_each_octave():
    lam = sample_lambdas(20000, 1.0, 2048.0, torch.Generator().manual_seed(0), "log-uniform")
    assert lam.min() >= 1 and lam.max() <= 2048
    below = [float((lam < 2.0 ** k).float().mean()) for k in (1, 5, 10)]
    assert below == pytest.approx([1 / 11, 5 / 11, 10 / 11], abs=0.015)
    with pytest.raises(ValueError, match="unknown λ sampling"):
        sample_lambdas(1, 1.0, 2.0, torch.Generator(), "uniform")


def test_log_middle_lambdas_put_three_quarters_on_the_middle_half_of_the_octaves():
    lam = sample_lambdas(40000, 1.0, 2.0 ** 12, torch.Generator().manual_seed(0), "log-middle")
    assert lam.min() >= 1 and lam.max() <= 2.0 ** 12
    below = [float((lam < 2.0 ** k).float().mean()) for k in (1.5, 3, 6, 9, 10.5)]
    # outer quarters (octaves 0-3, 9-12): 1/8 each, uniform within; middle half: 3/4, uniform within
    assert below == pytest.approx([1 / 16, 1 / 8, 1 / 2, 7 / 8, 15 / 16], abs=0.01)


def test_learning_rate_warms_up_holds_then_decays_to_one_percent():
    opts = TrainOptions(data=[], out="", steps=1000, lr=1e-3, warmup_steps=10)
    assert learning_rate(0, opts) == pytest.approx(1e-4)
    assert learning_rate(400, opts) == pytest.approx(1e-3)
    assert learning_rate(750, opts) < 1e-3
    assert learning_rate(1000, opts) == pytest.approx(1e-5)


def test_random_crop_pads_small_images_and_keeps_size():
    rng = np.random.default_rng(0)
    small = np.zeros((10, 300, 3), np.uint8)
    assert random_crop(small, 64, rng).shape == (64, 64, 3)
    tiny = np.zeros((1, 1, 3), np.uint8)
    assert random_crop(tiny, 64, rng).shape == (64, 64, 3)


@pytest.mark.slow
def test_train_resume_and_export(image_dir, tmp_path):
    out = tmp_path / "run"
    weights = train(options(image_dir, out, val_dir=str(image_dir), val_images=1, val_every=4,
                            val_lambdas=[0.01]), log=lambda s: None)
    log = read_csv(out / "log.csv")
    assert [int(r["step"]) for r in log] == [2, 4]
    assert all(np.isfinite(float(r["loss"])) for r in log)
    val = read_csv(out / "val.csv")
    assert len(val) == 1 and float(val[0]["bpp"]) > 0
    loaded = load_model(str(weights))
    assert loaded.lambda_range == pytest.approx((lambdas.to_cli(16), lambdas.to_cli(2048)))
    assert '"steps": 4' in loaded.metadata["training"]

    train(options(image_dir, out, steps=6, resume=True), log=lambda s: None)
    assert [int(r["step"]) for r in read_csv(out / "log.csv")] == [2, 4, 6]
    resumed = load_model(str(out / "ema.safetensors"))
    assert '"steps": 6' in resumed.metadata["training"]
    assert resumed.identity != loaded.identity


@pytest.mark.slow
def test_compile_runs_the_step_through_torch_compile_and_saves_the_plain_model(image_dir, tmp_path, monkeypatch):
    # A stand-in for torch.compile that wraps the module the way it does (so a saved wrapper
    # would show in the tensor names) without the minutes of compiling.
    class Compiled(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.wrapped = module
            self.calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            return self.wrapped(*args, **kwargs)

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(Compiled(module)) or compiled[-1])
    out = tmp_path / "run"
    train(options(image_dir, out, compile=True), log=lambda s: None)
    assert len(compiled) == 1 and compiled[0].calls == 4
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        assert not any("wrapped." in name for name in f.keys())
    train(options(image_dir, out, steps=6, resume=True), log=lambda s: None)
    assert '"steps": 6' in load_model(str(out / "ema.safetensors")).metadata["training"]


@pytest.mark.slow
def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = BGVAE(CONFIGS["tiny"]).train()
    from bgcodec.train.loop import rate_distortion

    im = torch.rand(2, 3, 64, 64)
    lam = torch.tensor([256.0, 256.0])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = rate_distortion(*model(im, lam), im, lam)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_init_copies_matching_tensors_and_lists_the_rest(tmp_path):
    from bgcodec.weights import save_model

    torch.manual_seed(1)
    source = BGVAE(CONFIGS["tiny"])
    path = tmp_path / "w.safetensors"
    save_model(source, path)
    changed = dataclasses.replace(CONFIGS["tiny"], stride4_depth=2)
    target = BGVAE(changed)
    grown, missing = init_from(target, str(path))
    assert not grown
    assert missing and all(name.startswith("synthesis.blocks.1.") for name in missing)
    assert torch.equal(target.bias, source.bias)
    assert torch.equal(target.synthesis.blocks[0].mlp[0].weight, source.synthesis.blocks[0].mlp[0].weight)


@pytest.mark.slow
def test_shallow_only_trains_only_the_shallow_synthesis(image_dir, tmp_path):
    from bgcodec.weights import load_model, save_model

    torch.manual_seed(3)
    start = tmp_path / "start.safetensors"
    save_model(BGVAE(CONFIGS["tiny"]), start)
    train(options(image_dir, tmp_path / "run", steps=3, init=str(start), shallow_only=True), log=lambda s: None)
    before = load_model(str(start)).model.state_dict()
    after = load_model(str(tmp_path / "run" / "ema.safetensors")).model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("shallow_synthesis.") for k in changed), sorted(changed)[:5]


@pytest.mark.slow
def test_two_process_ddp_on_cpu(image_dir, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "bgcodec", "train", str(image_dir), "-o", str(out), "--config", "tiny", "--steps", "2",
           "--batch-size", "2", "--crop", "64", "--log-every", "1", "--threads", "1", "--device", "cpu",
           "--lambda-sampling", "log-uniform"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_csv(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2]
    training = json.loads(load_model(str(out / "ema.safetensors")).metadata["training"])
    assert training["lambda_sampling"] == "log-uniform"


@pytest.mark.slow
def test_cli_val_lambdas_set_the_validation_points(image_dir, tmp_path):
    from click.testing import CliRunner

    from bgcodec.cli import cli

    args = ["train", str(image_dir), "-o", str(tmp_path / "run"), "--config", "tiny", "--steps", "2",
            "--batch-size", "2", "--crop", "64", "--log-every", "1", "--threads", "1", "--device", "cpu",
            "--val-dir", str(image_dir), "--val-every", "2"]
    result = CliRunner().invoke(cli, args + ["--val-lambdas", "0.02, 0.005"])
    assert result.exit_code == 0, result.output
    assert [float(r["lambda"]) for r in read_csv(tmp_path / "run" / "val.csv")] == [0.005, 0.02]
    bad = CliRunner().invoke(cli, args + ["--val-lambdas", "0.01,-1"])
    assert bad.exit_code == 2 and "--val-lambdas" in bad.output


def test_training_curve_history_continues_with_new_runs(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "training_curve.py"
    spec = importlib.util.spec_from_file_location("training_curve", script)
    curve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curve)
    history = tmp_path / "history.csv"
    history.write_text("step,lambda,bpp,psnr\n1000,0.0067,0.300,31.00\n1000,0.2,1.200,39.00\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "val.csv").write_text("step,lambda,bpp,psnr\n500,0.0067,0.29,31.5\n")
    (run / "log.csv").write_text("step,loss\n250,1\n600,1\n")
    merged = curve.add_runs(curve.read_history(history), [run])
    assert sorted(merged[0.0067]) == [(1000, 0.3, 31.0), (1500, 0.29, 31.5)]
    curve.write_history(merged, tmp_path / "merged.csv")
    assert curve.read_history(tmp_path / "merged.csv") == merged


@pytest.mark.parametrize("option, model_key, logged", [
    ({"it_weight": 0.1}, "source.net.", "source_bpp"),
    ({"cca_weight": 1.0}, "cca.stage3_latent1.", "cca_bpp"),
])
def test_a_regulariser_is_checkpointed_resumed_and_never_exported(image_dir, tmp_path, option, model_key, logged):
    from safetensors import safe_open

    prefix = model_key.split(".")[0]
    run = tmp_path / "run"
    train(options(image_dir, run, steps=2, **option), log=lambda s: None)
    with safe_open(str(run / "checkpoint.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith(model_key) for k in keys) and any(k.startswith(f"{prefix}_optim.") for k in keys)
    with safe_open(str(run / "ema.safetensors"), "pt") as f:
        assert not any(prefix in k or "aux" in k for k in f.keys())
    train(options(image_dir, run, steps=3, resume=True, **option), log=lambda s: None)
    with open(run / "log.csv") as f:
        assert logged in f.readline()


def test_the_dc_free_ramp_takes_the_mean_out_step_by_step(image_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(CONFIGS, "tiny-dc-free", dataclasses.replace(CONFIGS["tiny"], dc_free_detail=True))
    run = setup(options(image_dir, tmp_path / "run", config="tiny-dc-free", dc_free_ramp=4), log=lambda s: None)
    shares = []
    for _ in range(6):
        take_step(run)
        shares.append(run.model.synthesis.head.pattern[1].dc_removed)
    assert shares == [0, 0.25, 0.5, 0.75, 1, 1]
    assert run.ema.model.synthesis.head.pattern[1].dc_removed == 1  # validation and export see the coded model
