"""KL estimators of the SDE-BNN's augmented SDE against closed forms.

Every statistical test below is a two-sided z-test at 4 standard errors (false-alarm rate
6e-5 each) with a fixed seed; where Euler's discretisation biases the quantity, its size is
computed inline from the exact Euler recursion and added to the tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchsde
from torch import Tensor, nn

from flowfields.integrate import sdeint
from flowfields.sdebnn import (
    ESTIMATORS,
    SDEBNN,
    AugmentedSDE,
    OUPrior,
    PaddedBrownian,
    PosteriorDrift,
)

F64 = torch.float64


class ConstantDrift(nn.Module):
    """NN_phi(t, w) = c: the posterior dw = (-w + c) dt + sigma dB."""

    def __init__(self, n_weights: int, c: float) -> None:
        super().__init__()
        self.n_weights = n_weights
        self.c = nn.Parameter(torch.tensor(c, dtype=F64))

    def forward(self, t: Tensor, w: Tensor) -> Tensor:
        return self.c.expand_as(w)


def _solve(sde: AugmentedSDE, w_0: Tensor, steps: int, bm: object) -> Tensor:
    y_0 = sde.pack(None, w_0)
    if sde.noise_type == "diagonal":
        bm = PaddedBrownian(bm, before=0, after=1)
    sol = sdeint(sde, y_0, [0.0, 1.0], method="euler", dt=1.0 / steps, bm=bm)
    return sol.x[-1]


def _bm(s: int, p: int, seed: int) -> torchsde.BrownianInterval:
    return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(s, p), dtype=F64, entropy=seed)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_kl_is_exactly_zero_at_initialisation(estimator: str) -> None:
    """Zero-initialised last layer: q = p, so every path's KL estimate is exactly 0.

    Its gradient is exactly 0 for ckl (½|u|² at u = 0) and stl (u_sg ≡ 0 for every w, so no
    path derivative either). fmc's ∫u·dB has gradient ∫∂u/∂phi·dB, zero only in mean
    (tested in test_fmc_gradient_is_zero_in_mean_at_initialisation).
    """
    torch.manual_seed(0)
    net = SDEBNN(3, 2, width=4, hidden=5, drift_hidden=(6,), steps=10, estimator=estimator)
    res = net(torch.randn(7, 3), n_samples=5)
    assert torch.equal(res.kl, torch.zeros(5))
    if estimator == "fmc":
        return
    grads = torch.autograd.grad(res.kl.sum(), list(net.parameters()), allow_unused=True)
    for (name, _), g in zip(net.named_parameters(), grads, strict=True):
        assert g is None or torch.equal(g, torch.zeros_like(g)), name


def test_fmc_gradient_is_zero_in_mean_at_initialisation() -> None:
    """fmc at q = p: the gradient of ∫u·dB w.r.t. the last layer has mean 0 (per-path z-test)."""
    torch.manual_seed(1)
    drift = PosteriorDrift(3, hidden=(4,)).double()
    sde = AugmentedSDE(OUPrior(0.5), drift, estimator="fmc")
    n = 400
    kl = _solve(sde, torch.full((n, 3), 0.7, dtype=F64), 20, _bm(n, 3, 3))[:, -1]
    assert torch.equal(kl, torch.zeros(n, dtype=F64))
    # per-path gradient of the last bias: ∂kl_i/∂b = B_1 / sigma for path i (one backward each)
    bias = drift.net[-1].bias
    per_path = torch.stack(
        [torch.autograd.grad(kl[i], bias, retain_graph=True)[0] for i in range(0, n, 8)]
    )
    assert float(per_path.abs().max()) > 0  # not identically zero, unlike ckl / stl
    mean, se = per_path.mean(0), per_path.std(0) / math.sqrt(per_path.shape[0])
    assert bool((mean.abs() < 4 * se).all()), (mean, se)


def test_prior_moments_at_depth_one() -> None:
    """At q = p, w(1) has mean w_0 e^{-1} and variance sigma²(1 - e^{-2})/2.

    n = 4000 paths x 3 weights; Euler's bias on the variance is computed from the exact
    Euler recursion (about 1% at 100 steps) and allowed on top of 4 standard errors.
    """
    torch.manual_seed(2)
    sigma, steps, n = 0.8, 100, 4000
    sde = AugmentedSDE(OUPrior(sigma), PosteriorDrift(3, hidden=(4,)).double())
    w_0 = torch.tensor([[1.5, -0.5, 0.0]], dtype=F64).expand(n, -1)
    w_1 = sde.unpack(_solve(sde, w_0, steps, _bm(n, 3, 4)))[1]
    dt = 1.0 / steps
    mean = w_0[0] * math.exp(-1.0)
    var = sigma**2 * (1 - math.exp(-2.0)) / 2
    euler_mean = w_0[0] * (1 - dt) ** steps
    euler_var = sigma**2 * dt * sum((1 - dt) ** (2 * k) for k in range(steps))
    se_mean = math.sqrt(var / n)
    bias_mean = (euler_mean - mean).abs()
    assert bool(((w_1.mean(0) - mean).abs() < 4 * se_mean + bias_mean).all())
    se_var = var * math.sqrt(2 / n)
    v = w_1.var(0)
    assert bool(((v - var).abs() < 4 * se_var + abs(euler_var - var)).all()), (v, var)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_constant_offset_drift_kl(estimator: str) -> None:
    """f_q = -w + c: KL(Q||P) = P c² T / (2 sigma²) for all three estimators.

    ckl integrates ½|u|² = P c²/(2 sigma²) exactly; fmc and stl add (c/sigma) sum_i B_i(1),
    of standard deviation (c/sigma) sqrt(P T), tested at 4 standard errors of the mean.
    """
    c, sigma, p, n = 0.6, 0.5, 3, 2000
    sde = AugmentedSDE(OUPrior(sigma), ConstantDrift(p, c), estimator=estimator)
    kl = _solve(sde, torch.zeros(n, p, dtype=F64), 20, _bm(n, p, 5))[:, -1]
    exact = p * c**2 / (2 * sigma**2)
    if estimator == "ckl":
        torch.testing.assert_close(kl, torch.full_like(kl, exact), rtol=1e-12, atol=1e-12)
    else:
        se = (c / sigma) * math.sqrt(p) / math.sqrt(n)
        assert abs(float(kl.mean()) - exact) < 4 * se
        assert abs(float(kl.std()) / ((c / sigma) * math.sqrt(p)) - 1) < 4 * math.sqrt(1 / (2 * n))


def test_estimators_share_paths_and_values_with_one_brownian_motion() -> None:
    """One (S, P) Brownian motion: identical weight paths under every estimator, and the
    stl and fmc estimates equal in value (they differ only in what carries gradient)."""
    torch.manual_seed(6)
    drift = PosteriorDrift(4, hidden=(5,)).double()
    nn.init.normal_(drift.net[-1].weight, std=0.5)
    w_0 = torch.randn(1, 4, dtype=F64).expand(6, -1)
    bm = _bm(6, 4, 7)
    ys = {
        e: _solve(AugmentedSDE(OUPrior(0.3), drift, estimator=e), w_0, 15, bm) for e in ESTIMATORS
    }
    for e in ("fmc", "stl"):
        torch.testing.assert_close(ys[e][:, :-1], ys["ckl"][:, :-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(ys["stl"][:, -1], ys["fmc"][:, -1], rtol=0, atol=1e-12)
    assert float((ys["fmc"][:, -1] - ys["ckl"][:, -1]).abs().max()) > 1e-3


def test_constant_drift_gradients_agree_in_mean() -> None:
    """d KL / dc = P c T / sigma² in mean for all three; stl equals ckl exactly here (u_sg
    does not depend on the path), fmc adds sum_i B_i(1) / sigma (zero mean)."""
    c, sigma, p, n = 0.4, 0.5, 2, 1000
    grads = {}
    for e in ESTIMATORS:
        drift = ConstantDrift(p, c)
        kl = _solve(
            AugmentedSDE(OUPrior(sigma), drift, estimator=e),
            torch.zeros(n, p, dtype=F64),
            10,
            _bm(n, p, 8),
        )
        grads[e] = torch.autograd.grad(kl[:, -1].mean(), drift.c)[0]
    exact = p * c / sigma**2
    assert abs(float(grads["ckl"]) - exact) < 1e-12
    assert abs(float(grads["stl"]) - exact) < 1e-12
    se = math.sqrt(p) / sigma / math.sqrt(n)
    assert abs(float(grads["fmc"]) - exact) < 4 * se
