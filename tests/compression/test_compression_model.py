"""The latent-discretization model: neighbours, bridge, integrate-and-fire, loss, prior SDE."""

from __future__ import annotations

import pytest
import torch

from flowfields.compression import LatentDiscretization, bridge_latents, neighbours
from flowfields.errors import FlowfieldsError
from flowfields.integrate import ou_bridge, ou_stationary, ou_transition, sdeint

F64 = torch.float64


def test_neighbours_against_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    stored = torch.rand(5, 17, generator=g) < 0.3
    prev, nxt = neighbours(stored)
    for b in range(5):
        for j in range(17):
            before = [i for i in range(j) if stored[b, i]]
            after = [i for i in range(j + 1, 17) if stored[b, i]]
            assert int(prev[b, j]) == (before[-1] if before else -1)
            assert int(nxt[b, j]) == (after[0] if after else 17)


def test_bridge_latents_against_the_closed_form() -> None:
    theta, mu, sigma = (torch.tensor([0.7, 2.0], dtype=F64), torch.tensor([0.1, -0.3], dtype=F64),
                        torch.tensor([1.1, 0.5], dtype=F64))  # fmt: skip
    T = 12
    times = torch.linspace(0, 1, T, dtype=F64)
    z = torch.randn(1, T, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    stored = torch.zeros(1, T, dtype=torch.bool)
    stored[0, [2, 5, 9]] = True
    prev, nxt = neighbours(stored)
    out = bridge_latents(z, times, prev, nxt, theta, mu, sigma)
    for j in range(T):
        a, b = int(prev[0, j]), int(nxt[0, j])
        if a >= 0 and b < T:
            ref, _ = ou_bridge(z[0, a], times[a], z[0, b], times[b], times[j], theta, mu, sigma)
        else:
            src = b if a < 0 else a
            ref, _ = ou_transition(z[0, src], (times[j] - times[src]).abs(), theta, mu, sigma)
        torch.testing.assert_close(out[0, j], ref, rtol=1e-13, atol=1e-13)


def test_fire_stores_every_kth_frame_and_the_ends() -> None:
    lam_dt = torch.full((2, 20), 0.25, dtype=F64)
    stored = LatentDiscretization.fire(lam_dt, torch.tensor([0.5, 0.0], dtype=F64))
    # phase 1/2: Lambda_i + 1/2 = (i + 1)/4 + 1/2 crosses an integer at i = 1, 5, 9, ...
    assert torch.nonzero(stored[0])[:, 0].tolist() == [0, 1, 5, 9, 13, 17, 19]
    assert torch.nonzero(stored[1])[:, 0].tolist() == [0, 3, 7, 11, 15, 19]
    big = LatentDiscretization.fire(torch.full((1, 6), 3.0, dtype=F64), torch.zeros(1, dtype=F64))
    assert bool(big.all())  # at most one point per frame


def test_intensity_is_homogeneous_in_frame_rate_for_a_jump() -> None:
    """A jump contributes the same expected points at any frame rate (the discretization's
    design): lambda dt summed over the frames is c (duration) + 2 w |J|."""
    torch.manual_seed(0)
    model = LatentDiscretization(2, 2)
    totals = []
    for T in (32, 128, 512):
        u = torch.zeros(1, T, 2, dtype=F64)
        u[:, T // 3 :] = torch.tensor([3.0, -1.0], dtype=F64)
        totals.append(float(model.intensity_dt(u, torch.tensor(1.0 / T, dtype=F64)).sum().detach()))
    w = torch.nn.functional.softplus(model.log_w).detach()
    c = float(torch.nn.functional.softplus(model.log_c))
    expected = c + 2 * float(w @ torch.tensor([3.0, 1.0], dtype=F64))
    assert totals == pytest.approx([expected] * 3, rel=1e-12)


def test_loss_is_finite_and_trains_every_parameter() -> None:
    torch.manual_seed(0)
    model = LatentDiscretization(3, 2, hidden=8)
    x = torch.randn(4, 16, 3, dtype=F64).cumsum(1)
    out = model.loss(x, torch.linspace(0, 1, 16, dtype=F64), 1e-3, torch.Generator().manual_seed(0))
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    assert float(out["points"]) >= 2


def test_plan_bits_are_the_sum_over_stored_points() -> None:
    torch.manual_seed(1)
    model = LatentDiscretization(2, 2)
    x = torch.randn(1, 10, 2, dtype=F64)
    times = torch.linspace(0, 1, 10, dtype=F64)
    stored = torch.zeros(1, 10, dtype=torch.bool)
    stored[0, [0, 9]] = True
    plan = model.plan(x, times, stored)
    # two points: the first under the stationary law (no gap), the last a gap of n_max = 9
    theta, mu, sigma = model.ou()
    kappa2 = torch.exp(2 * model.log_kappa)
    m, v = ou_stationary(mu, theta, sigma)
    v = v + kappa2
    from flowfields.compression import gap_bits, gaussian_bits

    k = plan.symbols[0].double()
    first = gaussian_bits(k[0], m, v.sqrt(), model.radius).sum()
    m9, v9 = ou_transition(k[0], times[9], theta, mu, sigma)
    v9 = v9 + kappa2
    last = gaussian_bits(k[9], m9, v9.sqrt(), model.radius).sum()
    rho, pi = model.gap_params()
    gap = gap_bits(torch.tensor(9.0, dtype=F64), torch.tensor(9.0, dtype=F64), rho, times[1], pi)
    torch.testing.assert_close(plan.bits[0], (first + last + gap).detach(), rtol=1e-12, atol=1e-12)


def test_prior_sde_runs_through_sdeint_to_the_stationary_law() -> None:
    import torchsde

    torch.manual_seed(2)
    model = LatentDiscretization(2, 2)
    sde = model.prior_sde()
    m, v = ou_stationary(sde.mu, sde.theta, sde.sigma)
    n = 4000
    x_0 = m.expand(n, 2).clone()
    bm = torchsde.BrownianInterval(0.0, 3.0, size=(n, 2), dtype=F64, entropy=3)
    xs = sdeint(sde, x_0, [0.0, 3.0], method="euler", dt=1e-2, bm=bm).x[-1]
    se = (2.0 / (n - 1)) ** 0.5 * v
    assert ((xs.var(0) - v).abs() < 4 * se + 0.01 * v).all()  # Euler bias ~ theta dt / 2


def test_bad_construction_raises() -> None:
    with pytest.raises(FlowfieldsError, match="latent_dim"):
        LatentDiscretization(3, 0)
    with pytest.raises(FlowfieldsError, match="scale"):
        LatentDiscretization(3, 2, scale=-1.0)
