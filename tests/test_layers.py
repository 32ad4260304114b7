"""Tests for bgcodec.layers: Haar transform, resampling, B-ConvNeXt, cross-attention, λ embedding."""

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from bgcodec.layers import (
    EMBED_DIM,
    BConvNeXt,
    CrossAttention,
    LambdaEmbedding,
    PointwiseConv,
    WaveletDown,
    WaveletUp,
    haar_dwt,
    haar_idwt,
)

SHAPES = [(1, 1, 2, 2), (2, 3, 4, 6), (1, 5, 8, 2), (3, 2, 16, 10)]
DTYPES = [np.float64, np.float32]


def _rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


# -- Haar -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_haar_dwt_matches_pywt(shape, dtype):
    x = _rand(shape, dtype)
    ca, (ch, cv, cd) = pywt.dwt2(x.astype(np.float64), "haar")  # over the last two axes
    bands = haar_dwt(torch.from_numpy(x))
    b, c, h, w = shape
    assert bands.shape == (b, 4, c, h // 2, w // 2)
    assert bands.dtype == torch.from_numpy(x).dtype
    for i, ref in enumerate((ca, ch, cv, cd)):
        np.testing.assert_allclose(bands[:, i].double().numpy(), ref, atol=1e-5, rtol=0,
                                   err_msg=f"subband {i} (pywt order cA, cH, cV, cD)")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_haar_idwt_matches_pywt(shape, dtype):
    b, c, h, w = shape
    bands = _rand((b, 4, c, h // 2, w // 2), dtype, seed=1)
    ref = pywt.idwt2((bands[:, 0], (bands[:, 1], bands[:, 2], bands[:, 3])), "haar")
    ref = np.asarray(ref, dtype=np.float64)
    out = haar_idwt(torch.from_numpy(bands))
    assert out.shape == shape
    np.testing.assert_allclose(out.double().numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_haar_perfect_reconstruction_and_energy(shape, dtype):
    x = torch.from_numpy(_rand(shape, dtype, seed=2))
    bands = haar_dwt(x)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    torch.testing.assert_close(haar_idwt(bands), x, atol=tol, rtol=0)
    # Orthonormal: the transform preserves the energy of every (batch, channel) plane.
    e_in = x.double().pow(2).sum(dim=(2, 3))
    e_out = bands.double().pow(2).sum(dim=(1, 3, 4))
    torch.testing.assert_close(e_out, e_in, atol=tol * 10, rtol=tol * 10)


def test_haar_dc_and_edges():
    # A constant image is all DC: cA = 2·value, details 0.
    x = torch.full((1, 1, 4, 4), 3.0)
    bands = haar_dwt(x)
    assert torch.allclose(bands[:, 0], torch.full((1, 1, 2, 2), 6.0))
    assert torch.count_nonzero(bands[:, 1:]) == 0


# -- resampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("cin,cout,h,w", [(3, 8, 8, 8), (16, 24, 4, 6), (5, 5, 2, 2)])
def test_wavelet_down_shape(cin, cout, h, w):
    y = WaveletDown(cin, cout)(torch.randn(2, cin, h, w))
    assert y.shape == (2, cout, h // 2, w // 2)


@pytest.mark.parametrize("cin,cout,h,w", [(8, 3, 4, 4), (24, 16, 2, 3), (5, 5, 1, 1)])
def test_wavelet_up_shape(cin, cout, h, w):
    y = WaveletUp(cin, cout)(torch.randn(2, cin, h, w))
    assert y.shape == (2, cout, 2 * h, 2 * w)


def test_wavelet_down_is_proj_of_subbands():
    down = WaveletDown(3, 7)
    x = torch.randn(1, 3, 6, 4)
    ref = F.conv2d(haar_dwt(x).flatten(1, 2), down.proj.weight[:, :, None, None], down.proj.bias)
    torch.testing.assert_close(down(x), ref, atol=1e-5, rtol=1e-5)


# -- PointwiseConv --------------------------------------------------------------------------


@pytest.mark.parametrize("cin,cout,h,w", [(3, 5, 4, 7), (16, 8, 1, 1), (8, 32, 9, 5)])
def test_pointwise_conv_matches_conv2d(cin, cout, h, w):
    layer = PointwiseConv(cin, cout)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, cin, h, w)
    ref = F.conv2d(x, layer.weight.reshape(cout, cin, 1, 1), layer.bias)
    out = layer(x)
    assert out.shape == (2, cout, h, w)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# -- B-ConvNeXt -----------------------------------------------------------------------------


def _emb(lmbdas):
    torch.manual_seed(7)
    return LambdaEmbedding()(torch.tensor(lmbdas, dtype=torch.float32))


def _lively_block(dim=8, k=3):
    block = BConvNeXt(dim, k, 2.0)
    with torch.no_grad():
        block.layer_scale.fill_(0.5)
        block.modulation[1].weight.normal_(0, 0.5)
        block.modulation[1].bias.normal_(0, 0.5)
    return block


@pytest.mark.parametrize("k", [1, 3, 7])
def test_bconvnext_preserves_shape(k):
    block = BConvNeXt(12, k, 2.0)
    x = torch.randn(2, 12, 5, 9)
    assert block(x, _emb([16.0, 512.0])).shape == x.shape


def test_bconvnext_fresh_block_is_near_identity():
    block = BConvNeXt(8, 3)
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(block(x, _emb([64.0])), x, atol=1e-4, rtol=0)


def test_bconvnext_lambda_changes_output():
    block = _lively_block()
    x = torch.randn(1, 8, 6, 6)
    emb = _emb([16.0, 2048.0])
    y = block(x.expand(2, -1, -1, -1), emb)
    assert not torch.allclose(y[0], y[1], atol=1e-4)
    # Same λ gives the same output (rows are independent).
    y_same = block(x.expand(2, -1, -1, -1), emb[:1].expand(2, -1))
    torch.testing.assert_close(y_same[0], y_same[1])


@pytest.mark.parametrize("which", ["dc_scale", "hc_scale"])
def test_bconvnext_dc_hc_reweighting_changes_output(which):
    block = _lively_block()
    x = torch.randn(1, 8, 6, 6) + 0.7  # non-zero mean so the DC part is not trivially 0
    emb = _emb([128.0])
    base = block(x, emb)
    with torch.no_grad():
        getattr(block, which).fill_(0.8)
    changed = block(x, emb)
    assert changed.shape == base.shape
    assert not torch.allclose(base, changed, atol=1e-4)


def test_bconvnext_dc_hc_reweighting_formula():
    """With dc = hc = s the re-weighting is u·(1+s): compare against scaling the dwconv."""
    a = _lively_block()
    b = _lively_block()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        a.dc_scale.fill_(0.25)
        a.hc_scale.fill_(0.25)
        b.dwconv.weight.mul_(1.25)
        b.dwconv.bias.mul_(1.25)
    x = torch.randn(1, 8, 5, 5)
    emb = _emb([100.0])
    torch.testing.assert_close(a(x, emb), b(x, emb), atol=1e-5, rtol=1e-5)


# -- cross-attention --------------------------------------------------------------------------


@pytest.mark.parametrize("dim_high,dim_low,h,w", [(16, 32, 4, 6), (32, 24, 2, 2), (8, 8, 1, 3)])
def test_cross_attention_shapes(dim_high, dim_low, h, w):
    attn = CrossAttention(dim_high, dim_low)
    high = torch.randn(2, dim_high, 2 * h, 2 * w)
    low = torch.randn(2, dim_low, h, w)
    assert attn(high, low).shape == high.shape


def test_cross_attention_depends_on_low_res_input():
    attn = CrossAttention(32, 48)
    with torch.no_grad():
        attn.layer_scale.fill_(1.0)
    high = torch.randn(1, 32, 8, 10)
    low = torch.randn(1, 48, 4, 5)
    out1 = attn(high, low)
    out2 = attn(high, torch.randn(1, 48, 4, 5))
    assert not torch.allclose(out1, out2, atol=1e-4)
    # The fresh block (layer scale 1e-6) barely depends on it.
    fresh = CrossAttention(32, 48)
    d = (fresh(high, low) - fresh(high, torch.randn(1, 48, 4, 5))).abs().max()
    assert d < 1e-4


def test_cross_attention_heads():
    assert CrossAttention(128, 64).heads == 4
    assert CrossAttention(16, 64).heads == 1


# -- λ embedding --------------------------------------------------------------------------------


def test_lambda_embedding_shape_and_distinct():
    emb = _emb([16.0, 17.0, 512.0, 2048.0])
    assert emb.shape == (4, EMBED_DIM) == (4, 256)
    assert torch.isfinite(emb).all()
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(emb[i], emb[j], atol=1e-5), (i, j)


def test_lambda_embedding_deterministic_per_row():
    module = LambdaEmbedding()
    a = module(torch.tensor([300.0]))
    b = module(torch.tensor([16.0, 300.0]))[1:]
    torch.testing.assert_close(a, b)
