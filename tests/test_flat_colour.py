"""What trains the codec on flat colour: generated pictures and the shared-bias ×4 head."""

import dataclasses

import numpy as np
import pytest
import torch

from bgcodec.config import CONFIGS
from bgcodec.layers import set_dc_removed
from bgcodec.model import BGVAE
from bgcodec.train.checkpoints import init_from
from bgcodec.train.data import CropSampler
from bgcodec.train.synthetic import synthetic_picture
from bgcodec.weights import save_model


def test_synthetic_pictures_are_reproducible_and_mostly_flat():
    first = [synthetic_picture(128, np.random.default_rng(seed)) for seed in range(8)]
    again = [synthetic_picture(128, np.random.default_rng(seed)) for seed in range(8)]
    assert all(a.shape == (128, 128, 3) and a.dtype == np.uint8 for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.tobytes() for a in first}) == 8
    steps = [np.abs(np.diff(a.astype(int), axis=1)).max(axis=2) for a in first]
    assert np.median([np.mean(s <= 3) for s in steps]) > 0.8  # flat or smooth almost everywhere ...
    assert np.median([s.max() for s in steps]) > 60  # ... with sharp edges


def test_the_sampler_mixes_in_the_synthetic_share(image_dir):
    def median_step(batch):  # per crop, in levels: image_dir's photos have noise of σ 4
        return (batch[..., 1:] - batch[..., :-1]).abs().flatten(1).median(1).values * 255

    photos = CropSampler([image_dir], 64, seed=1).batch(16)
    generated = CropSampler([image_dir], 64, seed=1, synthetic_share=1.0).batch(16)
    mixed = CropSampler([image_dir], 64, seed=1, synthetic_share=0.5).batch(64)
    assert photos.shape == generated.shape == (16, 3, 64, 64)
    assert median_step(photos).min() > 4 > 3 > median_step(generated).max()
    assert 0.3 < float((median_step(mixed) < 3.5).float().mean()) < 0.7


def test_the_shared_head_bias_adds_one_value_per_colour():
    model = BGVAE(CONFIGS["tiny"]).eval()
    head = model.synthesis.head
    torch.nn.init.zeros_(head[0].weight)
    head[2].bias.data = torch.tensor([0.1, -0.2, 0.3])
    out = head(torch.randn(1, CONFIGS["tiny"].dec_widths[-1], 5, 7))
    assert out.shape == (1, 3, 20, 28)
    assert torch.equal(out, torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1).expand_as(out))


def test_init_folds_a_per_position_head_bias_into_its_mean(tmp_path):
    torch.manual_seed(2)
    old = BGVAE(dataclasses.replace(CONFIGS["tiny"], head_bias="per-position"))
    old.synthesis.head[0].bias.data.normal_()
    path = tmp_path / "old.safetensors"
    save_model(old, path)
    new = BGVAE(CONFIGS["tiny"])
    grown, missing = init_from(new, str(path))
    assert grown == ["synthesis.head.2.bias"] and not missing
    assert torch.allclose(new.synthesis.head[2].bias, old.synthesis.head[0].bias.view(3, 16).mean(1))
    assert torch.equal(new.synthesis.head[0].weight, old.synthesis.head[0].weight)


def test_an_unknown_head_bias_is_refused():
    with pytest.raises(ValueError, match="head_bias"):
        BGVAE(dataclasses.replace(CONFIGS["tiny"], head_bias="per-pixel"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dc_free_upsampling_and_head_turn_a_constant_feature_into_a_flat_one(dtype):
    torch.manual_seed(4)
    cfg = dataclasses.replace(CONFIGS["tiny"], dc_free_detail=True)
    plain, dc_free = BGVAE(CONFIGS["tiny"]).to(dtype), BGVAE(cfg).to(dtype)
    for model in (plain, dc_free):
        for p in model.parameters():
            p.data.normal_(0, 0.3)
    width8, width4 = cfg.dec_widths[-2], cfg.dec_widths[-1]
    constant8 = torch.randn(1, width8, 1, 1, dtype=dtype).expand(1, width8, 12, 10)
    constant4 = torch.randn(1, width4, 1, 1, dtype=dtype).expand(1, width4, 12, 10)

    def spread(x):  # the largest range of a channel over the positions, borders included
        return float((x.amax(dim=(2, 3)) - x.amin(dim=(2, 3))).max().detach())

    assert spread(dc_free.synthesis.transition.up(constant8)) < 1e-5
    assert spread(dc_free.synthesis.head(constant4)) < 1e-5
    assert spread(plain.synthesis.transition.up(constant8)) > 0.1  # a 2×2 pattern
    assert spread(plain.synthesis.head(constant4)) > 0.1  # a 4×4 pattern
    ramp = torch.linspace(-1, 1, 12, dtype=dtype).view(1, 1, 1, 12).expand(1, width4, 12, 12)
    assert spread(dc_free.synthesis.head(ramp)) > 0.1  # detail where the feature changes


def test_init_gives_a_dc_free_model_the_low_band_and_colour_of_plain_weights(tmp_path):
    torch.manual_seed(5)
    old = BGVAE(CONFIGS["tiny"])
    for p in old.parameters():
        p.data.normal_(0, 0.1)
    path = tmp_path / "old.safetensors"
    save_model(old, path)
    new = BGVAE(dataclasses.replace(CONFIGS["tiny"], dc_free_detail=True))
    grown, missing = init_from(new, str(path))
    assert "synthesis.head.pattern.0.weight" in grown and "synthesis.transition.up.low.weight" in grown
    assert all(name.endswith("detail.1.weight") or name == "synthesis.head.pattern.1.weight" for name in missing)
    width = CONFIGS["tiny"].dec_widths[-1]
    constant = torch.randn(1, width, 1, 1).expand(1, width, 4, 4)
    flat = new.synthesis.head(constant)
    assert torch.allclose(flat, old.synthesis.head(constant).mean(dim=(2, 3), keepdim=True).expand_as(flat), atol=1e-5)
    assert torch.equal(new.transitions[0].up.proj.weight, old.transitions[0].up.proj.weight)  # the top-down path
    up_old, up_new = old.synthesis.transition.up, new.synthesis.transition.up
    assert torch.equal(up_new.low.weight, up_old.proj.weight[:up_new.cout])
    assert torch.equal(up_new.detail[0].weight, up_old.proj.weight[up_new.cout:])


@pytest.mark.parametrize("head_bias", ["per-position", "shared"])
def test_with_the_mean_left_in_a_converted_synthesis_computes_what_the_plain_one_did(tmp_path, head_bias):
    torch.manual_seed(6)
    old = BGVAE(dataclasses.replace(CONFIGS["tiny"], head_bias=head_bias)).eval()
    for p in old.parameters():
        p.data.normal_(0, 0.1)
    path = tmp_path / "old.safetensors"
    save_model(old, path)
    new = BGVAE(dataclasses.replace(CONFIGS["tiny"], dc_free_detail=True)).eval()
    init_from(new, str(path))
    feature = torch.randn(2, CONFIGS["tiny"].dec_widths[-2], 10, 12)
    emb = torch.randn(2, 256)
    set_dc_removed(new, 0.0)
    assert torch.allclose(new.synthesis(feature, emb), old.synthesis(feature, emb), atol=1e-5)
    set_dc_removed(new, 1.0)
    assert not torch.allclose(new.synthesis(feature, emb), old.synthesis(feature, emb), atol=1e-3)
