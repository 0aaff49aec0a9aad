"""Ornstein–Uhlenbeck closed forms: exact algebra, and Monte Carlo through sdeint (4 s.e.)."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.integrate import (
    OUSDE,
    ou_bridge,
    ou_stationary,
    ou_transition,
    ou_variance,
    sdeint,
)

THETA, MU, SIGMA = 1.5, 0.3, 0.8


def test_transition_composes_and_tends_to_stationary() -> None:
    z = torch.tensor([-1.0, 0.0, 2.5], dtype=torch.float64)
    m1, v1 = ou_transition(z, 0.3, THETA, MU, SIGMA)
    # Chapman–Kolmogorov: a gap of 0.3 then 0.5 is one gap of 0.8 (mean and total variance)
    m2, v2 = ou_transition(m1, 0.5, THETA, MU, SIGMA)
    v2 = v2 + math.exp(-2 * THETA * 0.5) * v1
    m, v = ou_transition(z, 0.8, THETA, MU, SIGMA)
    torch.testing.assert_close(m2, m, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(v2, v, rtol=1e-14, atol=1e-14)
    m_inf, v_inf = ou_transition(z, 60.0, THETA, MU, SIGMA)
    s_mean, s_var = ou_stationary(MU, THETA, SIGMA)
    torch.testing.assert_close(m_inf, s_mean.expand(3), rtol=0, atol=1e-15)
    torch.testing.assert_close(v_inf, s_var.expand(3), rtol=1e-15, atol=0)
    assert float(ou_variance(1e-12, THETA, SIGMA)) == pytest.approx(SIGMA**2 * 1e-12, rel=1e-9)


def test_bridge_algebra() -> None:
    z_a, z_b = torch.tensor(1.2, dtype=torch.float64), torch.tensor(-0.7, dtype=torch.float64)
    t_a, t_b = 0.2, 1.1
    mean, var = ou_bridge(
        z_a, t_a, z_b, t_b, torch.tensor([t_a, t_b], dtype=torch.float64), THETA, MU, SIGMA
    )
    torch.testing.assert_close(mean, torch.stack([z_a, z_b]), rtol=0, atol=1e-15)
    torch.testing.assert_close(var, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-15)
    t = 0.5
    s, r = t - t_a, t_b - t
    # the product of the two Gaussian factors, in precision form
    mean_s, v_s = ou_transition(z_a, s, THETA, MU, SIGMA)
    a, v_r = math.exp(-THETA * r), float(ou_variance(r, THETA, SIGMA))
    prec = 1 / v_s + a**2 / v_r
    ref_mean = (mean_s / v_s + a * (z_b - MU + a * MU) / v_r) / prec
    mean, var = ou_bridge(z_a, t_a, z_b, t_b, t, THETA, MU, SIGMA)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(var, 1 / prec, rtol=1e-13, atol=1e-13)
    # law of total variance over z_b | z_a: bridge var + Var(bridge mean) = v(s)
    c = math.exp(-THETA * r) * v_s / ou_variance(s + r, THETA, SIGMA)
    total = var + c**2 * ou_variance(s + r, THETA, SIGMA)
    torch.testing.assert_close(total, v_s, rtol=1e-13, atol=1e-15)


def _paths(z_0: float, times: list[float], n: int, seed: int) -> torch.Tensor:
    import torchsde

    torch.manual_seed(seed)
    sde = OUSDE(torch.tensor([THETA]), torch.tensor([MU]), torch.tensor([SIGMA]))
    x_0 = torch.full((n, 1), z_0, dtype=torch.float64)
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=times[-1], size=(n, 1), dtype=torch.float64, entropy=seed
    )
    return sdeint(sde, x_0, times, method="euler", dt=2e-3, bm=bm).x[..., 0]


def test_transition_moments_by_monte_carlo() -> None:
    n, z_0 = 4000, 1.7
    xs = _paths(z_0, [0.0, 0.4, 1.0], n, seed=3)
    for k, s in ((1, 0.4), (2, 1.0)):
        mean, var = ou_transition(torch.tensor(z_0, dtype=torch.float64), s, THETA, MU, SIGMA)
        sample = xs[k]
        se_mean = math.sqrt(float(var) / n)
        se_var = float(var) * math.sqrt(2.0 / (n - 1))
        assert abs(float(sample.mean() - mean)) < 4 * se_mean
        assert abs(float(sample.var() - var)) < 4 * se_var


def test_bridge_moments_by_monte_carlo() -> None:
    """Jointly Gaussian (z_t, z_b): regress z_t on z_b; the fitted line at z_b and the residual
    variance are the bridge mean and variance."""
    n, z_a = 6000, -0.5
    xs = _paths(z_a, [0.0, 0.35, 0.9], n, seed=5)
    z_t, z_b = xs[1], xs[2]
    design = torch.stack([torch.ones(n, dtype=torch.float64), z_b], 1)
    coef = torch.linalg.lstsq(design, z_t[:, None]).solution[:, 0]
    resid = z_t - design @ coef
    resid_var = float(resid.var() * (n - 1) / (n - 2))
    for value in (-0.4, 0.0, 0.6):
        mean, var = ou_bridge(
            torch.tensor(z_a, dtype=torch.float64),
            0.0,
            torch.tensor(value),
            0.9,
            0.35,
            THETA,
            MU,
            SIGMA,
        )
        x = torch.tensor([1.0, value], dtype=torch.float64)
        cov = resid_var * torch.linalg.inv(design.T @ design)
        se = math.sqrt(float(x @ cov @ x))
        assert abs(float(x @ coef) - float(mean)) < 4 * se
    assert abs(resid_var - float(var)) < 4 * float(var) * math.sqrt(2.0 / (n - 2))


def test_bad_input_raises() -> None:
    z = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(FlowfieldsError, match="theta"):
        ou_transition(z, 0.1, -1.0, 0.0, 1.0)
    with pytest.raises(FlowfieldsError, match="sigma"):
        ou_stationary(0.0, 1.0, 0.0)
    with pytest.raises(FlowfieldsError, match="s:"):
        ou_transition(z, -0.1, 1.0, 0.0, 1.0)
    with pytest.raises(FlowfieldsError, match="t_b"):
        ou_bridge(z, 1.0, z, 1.0, 1.0, 1.0, 0.0, 1.0)
    with pytest.raises(FlowfieldsError, match="t:"):
        ou_bridge(z, 0.0, z, 1.0, 1.5, 1.0, 0.0, 1.0)
