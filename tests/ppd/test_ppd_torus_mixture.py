"""Torus densities: the wrapped normal against a brute-force wrap sum, EM against scipy."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from flowfields.errors import FlowfieldsError
from flowfields.ppd import (
    VonMisesMixture,
    WrappedNormalMixture,
    fit_von_mises_mixture,
    random_wrapped_normal_mixture,
)

F64 = torch.float64


def test_wrapped_normal_matches_a_long_wrap_sum() -> None:
    mus = torch.tensor([[0.3, -3.0], [2.9, 1.0]], dtype=F64)
    sigmas = torch.tensor([[0.2, 2.5], [1.0, 4.0]], dtype=F64)  # wide: many wraps matter
    w = torch.tensor([0.7, 0.3], dtype=F64)
    mix = WrappedNormalMixture(w, mus, sigmas)
    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = 2 * math.pi * x - math.pi
    k = 2 * math.pi * torch.arange(-200, 201, dtype=F64)
    delta = x[:, None, :, None] - mus[None, :, :, None] + k  # (B, K, d, wraps)
    dens = (torch.exp(-0.5 * (delta / sigmas[..., None]) ** 2).sum(-1)) / (
        sigmas * math.sqrt(2 * math.pi)
    )
    ref = torch.log((w * dens.prod(-1)).sum(-1))
    torch.testing.assert_close(mix.log_prob(x), ref, rtol=1e-12, atol=1e-12)


def test_wrapped_normal_samples_have_the_circular_moments() -> None:
    g = torch.Generator().manual_seed(1)
    mix = random_wrapped_normal_mixture(3, 1, 0.8, g)
    x = mix.sample(20000, g)
    # E exp(i (x - mu)) = exp(-sigma^2 / 2) for a wrapped normal
    c = torch.cos(x - mix.mus).mean(0)
    assert float((c - math.exp(-0.32)).abs().max()) < 4 * 0.7 / math.sqrt(20000)
    with pytest.raises(FlowfieldsError, match="sigmas"):
        WrappedNormalMixture(torch.ones(1), torch.zeros(1, 2), torch.zeros(1))


def test_one_component_em_is_scipy_von_mises_mle() -> None:
    g = torch.Generator().manual_seed(2)
    truth = VonMisesMixture(
        torch.ones(1, dtype=F64),
        torch.tensor([[2.8, -1.0]], dtype=F64),
        torch.tensor([[3.0, 0.7]], dtype=F64),
    )
    x = truth.sample(3000, g)
    fit = fit_von_mises_mixture(x, 1, iters=3)
    for j in range(2):
        kappa, loc, _ = stats.vonmises.fit(x[:, j].numpy(), fscale=1)
        assert abs(float(fit.kappas[0, j]) - kappa) < 1e-6 * kappa
        assert abs(math.remainder(float(fit.mus[0, j]) - loc, 2 * math.pi)) < 1e-6


def test_em_recovers_a_von_mises_mixture_on_t2() -> None:
    g = torch.Generator().manual_seed(3)
    truth = VonMisesMixture(
        torch.tensor([0.5, 0.3, 0.2], dtype=F64),
        torch.tensor([[-2.0, 2.0], [1.0, -1.0], [3.0, 0.5]], dtype=F64),
        torch.tensor([[6.0, 2.0], [3.0, 8.0], [10.0, 10.0]], dtype=F64),
    )
    train, test = truth.sample(4000, g), truth.sample(2000, g)
    nll_true = -float(truth.log_prob(test).mean())
    best = min(
        -float(fit_von_mises_mixture(train, 3, generator=g).log_prob(test).mean()) for _ in range(3)
    )
    assert best - nll_true < 0.02
    one = -float(fit_von_mises_mixture(train, 1, generator=g).log_prob(test).mean())
    assert one > nll_true + 0.3
    with pytest.raises(FlowfieldsError, match="k"):
        fit_von_mises_mixture(train, 0)
