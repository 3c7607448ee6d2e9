"""Tests of klcontrol.vae_plant.training.model: architecture, shapes and the loss reductions against hand computations."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from klcontrol.vae_plant.training.model import BetaVAE, bernoulli_recon, gaussian_kl, vae_losses


def test_shapes():
    torch.manual_seed(0)
    m = BetaVAE()
    x = (torch.rand(3, 1, 64, 64) < 0.1).float()
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (3, 10)
    logits, mu2, lv2 = m(x, torch.zeros(3, 10))
    assert logits.shape == (3, 1, 64, 64)
    assert torch.equal(mu, mu2) and torch.equal(logvar, lv2)
    assert m.decode(torch.zeros(5, 10)).shape == (5, 1, 64, 64)


def test_architecture_is_table_3():
    m = BetaVAE()
    convs = [l for l in m.encoder if isinstance(l, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 256]
    assert [c.kernel_size for c in convs] == [(4, 4)] * 5
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    lins = [l for l in m.encoder if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lins] == [(256, 20)]
    assert (m.decoder_fc.in_features, m.decoder_fc.out_features) == (10, 256)
    ups = [l for l in m.decoder if isinstance(l, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels) for u in ups] == [(256, 64), (64, 64), (64, 32), (32, 32), (32, 1)]
    assert [u.stride for u in ups] == [(1, 1)] + [(2, 2)] * 4
    wide = BetaVAE(hidden_fc=True)
    assert [(l.in_features, l.out_features) for l in wide.encoder if isinstance(l, nn.Linear)] == [(256, 256), (256, 20)]
    assert wide.encode(torch.zeros(2, 1, 64, 64))[0].shape == (2, 10)


def test_bad_sizes():
    with pytest.raises(ValueError, match="latent_dim"):
        BetaVAE(latent_dim=0)


def _softplus(v):
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


def test_recon_and_kl_against_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(2, 1, 64, 64))
    x = (rng.random((2, 1, 64, 64)) < 0.3).astype(float)
    # Bernoulli NLL per pixel: -[x log σ(l) + (1-x) log(1-σ(l))] = softplus(l) - x·l
    hand = sum(_softplus(logits[b]) - x[b] * logits[b] for b in range(2)).sum() / 2
    got = bernoulli_recon(torch.tensor(logits), torch.tensor(x))
    assert got.item() == pytest.approx(hand, rel=1e-12)

    mu = np.array([[0.5, -1.0, 0.0], [2.0, 0.0, 0.1]])
    lv = np.array([[0.0, math.log(2.0), -1.0], [0.3, 0.0, 0.0]])
    per = np.zeros(3)
    for b in range(2):
        for j in range(3):
            s2 = math.exp(lv[b, j])
            per[j] += 0.5 * (mu[b, j] ** 2 + s2 - 1 - math.log(s2)) / 2
    kl = gaussian_kl(torch.tensor(mu), torch.tensor(lv))
    np.testing.assert_allclose(kl.numpy(), per, rtol=1e-12)
    # by hand: latent 0 = (0.5·0.25 + 0.5·(4 + e^0.3 − 1 − 0.3)) / 2
    assert per[0] == pytest.approx((0.125 + 0.5 * (4 + math.exp(0.3) - 1.3)) / 2)


def test_vae_losses_reductions():
    torch.manual_seed(1)
    m = BetaVAE().double()
    x = (torch.rand(4, 1, 64, 64) < 0.1).double()
    noise = torch.randn(4, 10, dtype=torch.float64)
    recon, kl, kl_lat = vae_losses(m, x, noise)
    logits, mu, lv = m(x, noise)
    assert kl_lat.shape == (10,)
    assert kl.item() == pytest.approx(kl_lat.sum().item())
    per_image_kl = (0.5 * (mu**2 + lv.exp() - 1 - lv)).sum(1)
    assert kl.item() == pytest.approx(per_image_kl.mean().item())
    per_image_recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    assert recon.item() == pytest.approx(per_image_recon.mean().item())
    again = vae_losses(m, x, noise)
    assert torch.equal(again[0], recon)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=4, max_size=4), st.lists(st.floats(-4, 4), min_size=4, max_size=4))
def test_kl_nonnegative_and_zero_only_at_prior(mu, lv):
    kl = gaussian_kl(torch.tensor([mu], dtype=torch.float64), torch.tensor([lv], dtype=torch.float64))
    assert torch.all(kl >= -1e-15)  # exp(lv) - 1 - lv rounds to -lv for subnormal lv
    zero = (np.abs(mu) < 1e-12) & (np.abs(lv) < 1e-12)
    assert np.all((kl.numpy() < 1e-15) >= zero)
