"""The causal-context-adjustment loss (--cca-weight): auxiliary priors that do not see the
latent before theirs, fitted on their own, frozen for the codec's term."""

import pytest
import torch

from bgcodec.config import CONFIGS
from bgcodec.errors import BgcodecError
from bgcodec.model import BGVAE
from bgcodec.train.cca import CausalContextRegulariser
from bgcodec.train.loop import rate_distortion

from helpers import perturb
from test_training import options

TINY = CONFIGS["tiny"]


def forward(seed=0):
    torch.manual_seed(seed)
    model = perturb(BGVAE(TINY)).train()
    regulariser = CausalContextRegulariser(model, weight=0.5, lr=1e-3)
    im = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    lmbda = torch.tensor([4.0, 300.0])
    out, rates = model(im, lmbda)
    return model, regulariser, im, lmbda, out, rates


def test_there_is_one_auxiliary_prior_per_latent_with_a_predecessor_in_its_stage():
    model, regulariser, *_ = forward()
    assert regulariser.pairs == [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2)]
    assert not any("aux" in name or "cca" in name for name in model.state_dict())


def test_an_auxiliary_prior_starts_as_its_latents_prior():
    model, regulariser, im, lmbda, out, rates = forward(1)
    stage, i = 2, 1
    h, emb = regulariser._inputs[stage, i]  # the latent's own input: the auxiliary prior then is the main one
    latent = model.stages[stage].latents[i]
    log_step = latent.log_step(model.condition(lmbda)[1])
    aux = regulariser.model[f"stage{stage}_latent{i}"]
    main_rate = rates[TINY.latent_index(stage, i)]
    assert torch.allclose(aux.rate(h, emb, regulariser._latents[stage, i], log_step), main_rate, rtol=1e-5)


def test_the_fit_leaves_the_codec_alone_and_the_term_leaves_the_auxiliary_priors_alone():
    model, regulariser, im, lmbda, out, rates = forward(2)
    before = [p.detach().clone() for p in regulariser.model.parameters()]
    term = regulariser.term(out, rates, im, lmbda)
    assert all(p.grad is None for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, regulariser.model.parameters()))
    for p in regulariser.model.parameters():
        p.grad = None
    (rate_distortion(out, rates, im, lmbda)["loss"] + term["penalty"]).backward()
    assert all(p.grad is None for p in regulariser.model.parameters())
    assert model.encoder.stem.weight.grad.abs().sum() > 0
    assert model.stages[3].latents[1].prior.weight.grad.abs().sum() > 0


def test_the_auxiliary_priors_learn_on_a_fixed_batch():
    model, regulariser, im, lmbda, *_ = forward(3)
    model.eval()
    gaps = []
    for _ in range(30):
        with torch.no_grad():
            out, rates = model(im, lmbda, noisy=False)
        gaps.append(regulariser.term(out, rates, im, lmbda)["cca_bpp"].item())
    assert gaps[-1] < gaps[0]  # what the auxiliary priors spend beyond the main ones shrinks


def test_the_term_is_refused_where_it_has_no_meaning():
    with pytest.raises(BgcodecError, match="--cca-weight"):
        options("unused", "unused", cca_weight=1.0, shallow_only=True).check()


def test_a_latents_reward_is_capped_at_the_rate_of_its_predecessor():
    model, regulariser, im, lmbda, out, rates = forward(4)
    with torch.no_grad():
        for aux in regulariser.model.values():
            aux.prior.bias.add_(50.0)  # an auxiliary prior fooled into absurd predictions
    regulariser.optimizer = torch.optim.SGD(regulariser.model.parameters(), lr=0.0)
    reward = -regulariser.term(out, rates, im, lmbda)["penalty"] / regulariser.weight
    cap = sum(rates[TINY.latent_index(stage, i - 1)].mean() for stage, i in regulariser.pairs) / (3 * 64 * 64)
    assert reward.item() == pytest.approx(cap.item(), rel=1e-5)
