"""Growing trained weights into a wider config (bgcodec.widening, via init_from)."""

import dataclasses

import torch
import torch.nn.functional as F

from bgcodec.config import CONFIGS
from bgcodec.model import BGVAE
from bgcodec.train.checkpoints import init_from
from bgcodec.weights import save_model

TINY = CONFIGS["tiny"]


def grown_pair(tmp_path, **wider):
    torch.manual_seed(0)
    old = BGVAE(TINY).eval()
    for name, p in old.named_parameters():  # make every block matter, as in a trained model
        if name.endswith(("layer_scale", "modulation.1.weight", "step_offset")):
            p.data.normal_(0, 0.3)
    path = tmp_path / "old.safetensors"
    save_model(old, path)
    new = BGVAE(dataclasses.replace(TINY, **wider)).eval()
    grown, missing = init_from(new, str(path))
    assert grown and not missing
    return old, new


def pad(x, channels):
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))


def test_new_latent_channels_change_neither_the_image_nor_the_rate(tmp_path):
    old, new = grown_pair(tmp_path, latent_channels=(4, 4, 4, 8))
    im, lmbda = torch.rand(1, 3, 64, 64), torch.tensor([100.0])
    with torch.no_grad():
        (x_old, r_old), (x_new, r_new) = old(im, lmbda, noisy=False), new(im, lmbda, noisy=False)
    assert torch.allclose(x_old, x_new, atol=1e-5)
    extra_nats = (sum(r_new) - sum(r_old)).item()
    assert 0 <= extra_nats < 1e-3 * 3 * 4 * 8 * 8  # 3 latents × 4 new channels × 8×8 positions


def test_wider_layers_keep_the_old_channels_in_place(tmp_path):
    old, new = grown_pair(tmp_path, enc_widths=(16, 32, 32, 32, 32), dec_widths=(32, 32, 32, 40, 24))
    torch.manual_seed(1)
    emb = torch.randn(2, 256)
    with torch.no_grad():
        x = torch.randn(2, 16, 16, 16)  # stride-4 encoder feature → stride-8 tap (24 → 32 channels)
        assert torch.allclose(new.encoder.downs[0](x)[:, :24], old.encoder.downs[0](x), atol=1e-5)
        assert new.encoder.downs[0](x)[:, 24:].abs().max() == 0
        x = torch.randn(2, 24, 8, 8)  # Haar subbands of a grown input
        assert torch.allclose(new.encoder.downs[1](pad(x, 32)), old.encoder.downs[1](x), atol=1e-5)
        x = torch.randn(2, 32, 4, 4)  # 16 → 8 transition: four subbands of a grown output
        assert torch.allclose(new.transitions[2].up(x)[:, :24], old.transitions[2].up(x), atol=1e-5)
        latent_old, latent_new = old.stages[3].latents[0], new.stages[3].latents[0]
        feature, tap = torch.randn(2, 24, 8, 8), torch.randn(2, 24, 8, 8)
        merged_old = latent_old.merge(torch.cat([feature, tap], dim=1))
        merged_new = latent_new.merge(torch.cat([pad(feature, 40), pad(tap, 32)], dim=1))
        assert torch.allclose(merged_new[:, :24], merged_old, atol=1e-5)
        shift_scale_old = latent_old.front.modulation(emb).chunk(2, dim=1)
        shift_scale_new = latent_new.front.modulation(emb).chunk(2, dim=1)
        for o, n in zip(shift_scale_old, shift_scale_new):
            assert torch.allclose(n[:, :24], o, atol=1e-5) and n[:, 24:].abs().max() == 0


def test_larger_kernels_filter_as_the_smaller_ones_did(tmp_path):
    old, new = grown_pair(tmp_path, dec_kernels=(1, 3, 3, 5, 5))
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        assert torch.allclose(new.stages[3].latents[0].front.dwconv(x), old.stages[3].latents[0].front.dwconv(x),
                              atol=1e-5)
