"""What trains the codec on flat colour: generated pictures and the shared-bias ×4 head."""

import dataclasses

import numpy as np
import pytest
import torch

from bgcodec.config import CONFIGS
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
