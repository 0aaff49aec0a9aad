"""bits_per_dim with uniform dequantization and the importance-weighted K-sample bound.

Closed forms: a uniform density (bpd = log2 L exactly), a piecewise-constant histogram model
(dequantized bpd = discrete bpd for every K), and a 1-D Gaussian whose cell probabilities
and expected K = 1 bound are known exactly. Statistical tests: 4 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from flowfields.errors import FlowfieldsError
from flowfields.matching import (
    FullCovarianceGaussian,
    IndependentPixelHistogram,
    bits_per_dim,
    dequantize,
)


class UniformBox:
    """Uniform density on [-1, 1)^D."""

    def log_prob(self, z):
        flat = z.reshape(z.shape[0], -1)
        inside = ((flat >= -1) & (flat < 1)).all(1)
        lp = torch.full((z.shape[0],), -flat.shape[1] * math.log(2.0), dtype=torch.float64)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))


class Gaussian1D:
    def __init__(self, mu, sigma):
        self.mu, self.sigma = mu, sigma

    def log_prob(self, y):
        y = y.reshape(y.shape[0]).double()
        return torch.distributions.Normal(self.mu, self.sigma).log_prob(y)


def test_uniform_density_with_affine_preprocessing_is_log2_levels():
    x = torch.randint(0, 17, (50, 1, 3, 3))
    for K in (1, 3):
        out = bits_per_dim(UniformBox(), x, 17, K=K, scale=2.0, shift=-1.0)
        assert abs(out.bpd - math.log2(17)) < 1e-12
        assert out.per_example.shape == (50,) and out.K == K
    # without telling bits_per_dim about the scale, the answer is off by exactly log2(2) = 1
    wrong = bits_per_dim(UniformBox(), x, 17, scale=1.0, shift=0.0)
    assert math.isinf(wrong.bpd) or abs(wrong.bpd - math.log2(17)) > 0.5


def test_histogram_model_is_exact_for_every_K():
    rng = np.random.default_rng(0)
    levels = 5
    train = torch.from_numpy(rng.integers(0, levels, size=(400, 1, 2, 3)))
    train = torch.minimum(train, torch.from_numpy(rng.integers(0, levels, size=(400, 1, 2, 3))))
    test = torch.from_numpy(rng.integers(0, levels, size=(60, 1, 2, 3)))
    model = IndependentPixelHistogram((1, 2, 3), levels, alpha=1.0).fit(train)
    # hand computation: add-one smoothed per-pixel frequencies
    tr, te = train.reshape(400, 6).numpy(), test.reshape(60, 6).numpy()
    logp = np.zeros(60)
    for d in range(6):
        counts = np.bincount(tr[:, d], minlength=levels) + 1.0
        logp += np.log(counts[te[:, d]] / counts.sum())
    expected = -logp.mean() / (6 * math.log(2))
    g = torch.Generator().manual_seed(0)
    for K in (1, 4):
        out = bits_per_dim(model, test, levels, K=K, generator=g)
        assert abs(out.bpd - expected) < 1e-5
    # its samples lie in [0, 1) and reproduce the pixel marginals roughly
    ys = model.sample(3000, generator=g)
    assert ys.shape == (3000, 1, 2, 3) and float(ys.min()) >= 0 and float(ys.max()) < 1
    assert torch.isfinite(model.log_prob(ys)).all()


def _cell_logP(x, levels, mu, sigma):
    return np.log(norm.cdf((x + 1) / levels, mu, sigma) - norm.cdf(x / levels, mu, sigma))


def _expected_K1(x, levels, mu, sigma):
    # E_u[log N((x + u)/L; mu, sigma)] - log L, with (x + u)/L uniform on [a, b]
    a, b = x / levels, (x + 1) / levels
    m2 = ((b - mu) ** 3 - (a - mu) ** 3) / (3 * (b - a))
    return -0.5 * math.log(2 * math.pi * sigma**2) - m2 / (2 * sigma**2) - math.log(levels)


def test_importance_weighted_bound_tightens_to_the_exact_discrete_likelihood():
    levels, mu, sigma = 4, 0.45, 0.2
    x = torch.arange(levels).repeat(500).reshape(-1, 1)  # 2000 examples, D = 1
    xn = x.reshape(-1).numpy().astype(float)
    model = Gaussian1D(mu, sigma)
    ln2 = math.log(2)
    g = torch.Generator().manual_seed(0)
    k1 = bits_per_dim(model, x, levels, K=1, generator=g, dtype=torch.float64)
    exp_k1 = -np.mean([_expected_K1(v, levels, mu, sigma) for v in xn]) / ln2
    assert abs(k1.bpd - exp_k1) < 4 * k1.stderr
    exact = -np.mean(_cell_logP(xn, levels, mu, sigma)) / ln2
    kbig = bits_per_dim(model, x, levels, K=512, generator=g, dtype=torch.float64)
    assert abs(kbig.bpd - exact) < 2e-3
    # the Jensen gap is well resolved here, so K = 512 is clearly tighter than K = 1
    assert exp_k1 - exact > 0.05
    assert kbig.bpd < k1.bpd - 0.03
    k8 = bits_per_dim(model, x, levels, K=8, generator=g, dtype=torch.float64)
    assert exact - 1e-3 < k8.bpd < k1.bpd
    # the K = 1 bound from the same 8 draws is unbiased for the K = 1 expectation
    assert abs(k8.bpd_k1 - exp_k1) < 4 * k1.stderr / math.sqrt(8) + 1e-3
    assert k8.bpd < k8.bpd_k1 and k1.bpd_k1 == pytest.approx(k1.bpd)


def test_full_covariance_gaussian_matches_scipy():
    from scipy.stats import multivariate_normal

    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)
    data = torch.randn(500, 3, generator=g, dtype=torch.float64) @ A.T + 1.0
    model = FullCovarianceGaussian((3,), ridge=0.0).fit(data)
    ref = multivariate_normal(data.mean(0).numpy(), np.cov(data.numpy().T, bias=True))
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(model.log_prob(x).numpy(), ref.logpdf(x.numpy()), rtol=1e-10)
    assert model.sample(7, generator=g).shape == (7, 3)


def test_dequantize_range():
    x = torch.tensor([[0, 16], [3, 5]])
    y = dequantize(x, 17, generator=torch.Generator().manual_seed(0))
    assert torch.all(y >= x / 17) and torch.all(y < (x + 1) / 17)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x_int": torch.tensor([[0.5, 1.0]])}, "x_int"),
        ({"x_int": torch.tensor([[0, 17]])}, "x_int"),
        ({"x_int": torch.tensor([[-1, 2]])}, "x_int"),
        ({"x_int": torch.tensor([0, 1])}, "x_int"),
        ({"levels": 1}, "levels"),
        ({"K": 0}, "K"),
        ({"scale": 0.0}, "scale"),
        ({"scale": torch.ones(3)}, "scale"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"model": UniformBox(), "x_int": torch.tensor([[0, 1]]), "levels": 17}
    args.update(kwargs)
    with pytest.raises(FlowfieldsError, match=match):
        bits_per_dim(**args)
