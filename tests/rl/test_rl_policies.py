"""Tanh-Gaussian log-density (change of variables, autograd Jacobian) and the latent policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from flowfields.errors import FlowfieldsError
from flowfields.rl import LatentPolicy, TanhGaussianPolicy, tanh_gaussian_log_prob, tanh_log_det


def test_tanh_log_det_against_autograd() -> None:
    u = torch.linspace(-6, 6, 25, dtype=torch.float64).reshape(5, 5)
    jac = torch.autograd.functional.jacobian(lambda x: torch.tanh(x).sum(0), u)  # diagonal
    diag = torch.stack([jac[j, :, j] for j in range(5)], dim=-1)  # d tanh(u_ij) / d u_ij
    torch.testing.assert_close(tanh_log_det(u), diag.log().sum(-1), rtol=1e-10, atol=1e-10)
    assert bool(torch.isfinite(tanh_log_det(torch.tensor([[50.0, -80.0]]))).all())


def test_tanh_gaussian_density_by_change_of_variables() -> None:
    """1-D: against scipy's normal pdf / (1 - a^2), and it integrates to 1 over (-1, 1)."""
    mu, sd = 0.4, 0.7
    a = np.linspace(-0.99, 0.99, 41)
    u = torch.tensor(np.arctanh(a))[:, None]
    ours = tanh_gaussian_log_prob(u, torch.full_like(u, mu), torch.full_like(u, math.log(sd)))
    ref = stats.norm(mu, sd).logpdf(np.arctanh(a)) - np.log1p(-(a**2))
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-10)

    def pdf(x: float) -> float:
        t = torch.tensor([[math.atanh(x)]], dtype=torch.float64)
        m, ls = torch.full_like(t, mu), torch.full_like(t, math.log(sd))
        return math.exp(float(tanh_gaussian_log_prob(t, m, ls)))

    total, _ = integrate.quad(pdf, -1, 1, limit=200)
    assert abs(total - 1) < 1e-6


def test_sample_log_prob_matches_its_parameters() -> None:
    torch.manual_seed(0)
    pol = TanhGaussianPolicy(3, 2, hidden=16).double()
    obs = torch.randn(6, 3, dtype=torch.float64)
    s = pol.sample(obs)
    mu, log_std = pol(obs)
    assert s.action.shape == (6, 2) and bool((s.action.abs() < 1).all())
    torch.testing.assert_close(s.log_prob, tanh_gaussian_log_prob(s.pre_tanh, mu, log_std))
    torch.testing.assert_close(pol.act(obs, deterministic=True), torch.tanh(mu))


def test_degenerate_latent_is_a_tanh_gaussian() -> None:
    """latent_std = 0: every particle is mu_s(x), so -H_K is the head's tanh-Gaussian log pi."""
    torch.manual_seed(1)
    pol = LatentPolicy(3, 2, hidden=16, latent_dim=4, head_hidden=8, n_particles=16, latent_std=0)
    pol = pol.double()
    obs = torch.randn(7, 3, dtype=torch.float64)
    s = pol.sample(obs)
    assert s.latents is not None and s.log_probs is not None
    assert s.latents.shape == (17, 7, 4) and s.log_probs.shape == (17, 7)
    mu, log_std = pol(obs)
    expected = tanh_gaussian_log_prob(s.pre_tanh, mu, log_std)
    torch.testing.assert_close(s.log_prob, expected, rtol=0, atol=1e-12)


def test_latent_policy_particles_are_independent_of_the_trunk_batching() -> None:
    """The head over K + 1 particles in one call equals the head called particle by particle."""
    torch.manual_seed(2)
    pol = LatentPolicy(3, 1, hidden=16, latent_dim=2, head_hidden=8, n_particles=5).double()
    obs = torch.randn(4, 3, dtype=torch.float64)
    head_h, mu_s, std_s = pol.encode(obs)
    s = mu_s + std_s * torch.randn(6, 4, 2, dtype=torch.float64)
    mu, log_std = pol.head(head_h, s)
    for k in range(6):
        mk, lk = pol.head(head_h, s[k : k + 1])
        torch.testing.assert_close(mu[k], mk[0])
        torch.testing.assert_close(log_std[k], lk[0])


def test_bad_arguments() -> None:
    with pytest.raises(FlowfieldsError, match="n_particles"):
        LatentPolicy(3, 1, n_particles=-1)
    with pytest.raises(FlowfieldsError, match="latent_std"):
        LatentPolicy(3, 1, latent_std=-0.1)
    pol = LatentPolicy(3, 1, hidden=8)
    with pytest.raises(FlowfieldsError, match="n_particles"):
        pol.sample(torch.zeros(2, 3), n_particles=-2)
    with pytest.raises(FlowfieldsError, match="noise"):
        pol.sample(torch.zeros(2, 3), noise=torch.zeros(3, 1))
