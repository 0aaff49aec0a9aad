"""The LMC residual: zero for an analytic generating pair, and the CNF it defines."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.divergence import divergence_exact
from flowfields.errors import FlowfieldsError
from flowfields.integrate import ODEOptions
from flowfields.manifolds import FlatTorus, Sphere
from flowfields.matching import CNF
from flowfields.ppd import (
    KappaSchedule,
    ManifoldField,
    VMFMixturePath,
    VonMisesMixturePath,
    lmc_residual,
    log_vmf_normalizer,
    ppd_loss,
    tangent_field,
)

F64 = torch.float64
S2 = Sphere(2)
K = 5.0
POLE = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)


def zonal_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The exact field generating vMF(pole, kappa_t = K t) from the uniform density on S^2.

    Mass above height z, ``M(z) = (1 - e^{k(z-1)}) / (1 - e^{-2k})``, is carried by
    ``dz/dt = d_t M / (2 pi p)``: ``v = f(z) P_x e_3`` with
    ``f = k' d_k M (1 - e^{-2k}) / (k e^{k(z-1)} (1 - z^2))`` (K/2 at k = 0).
    """
    t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
    k = (K * t).clamp_min(1e-4)
    z = x[:, 2]
    e = torch.exp(k * (z - 1))
    d = 1 - torch.exp(-2 * k)
    dm = (-(z - 1) * e * d - (1 - e) * 2 * torch.exp(-2 * k)) / d**2
    f = K * dm * d / (k * e * (1 - z * z))
    return f[:, None] * S2.proju(x, POLE.expand_as(x))


def test_analytic_pair_has_zero_residual() -> None:
    path = VMFMixturePath(S2, KappaSchedule(K, 1.0))
    g = torch.Generator().manual_seed(0)
    t = 0.02 + 0.98 * torch.rand(200, generator=g, dtype=F64)
    x = path.sample(t, POLE, g)
    r = lmc_residual(zonal_field, path, t, x, POLE)
    assert float(r.dt_log_p.abs().max()) > 1.0  # the terms are not trivially small
    assert float(r.residual.abs().max()) <= 1e-10
    # power: a slightly wrong speed leaves a residual
    wrong = lmc_residual(lambda t, x: 1.1 * zonal_field(t, x), path, t, x, POLE)
    assert float(wrong.residual.abs().mean()) > 1e-2


def test_analytic_pair_cnf_matches_closed_form_vmf() -> None:
    path = VMFMixturePath(S2, KappaSchedule(K, 1.0))
    g = torch.Generator().manual_seed(1)
    x = path.sample(torch.ones(64, dtype=F64), POLE, g)
    cnf = CNF(zonal_field, 3, manifold=S2, solver=ODEOptions("rk4", step_size=1 / 64))
    lp = cnf.log_prob(x)
    exact = K * x[:, 2] + log_vmf_normalizer(torch.tensor(K, dtype=F64), 2)
    assert float((lp - exact).abs().max()) < 1e-4
    # sampling from the uniform base lands on vMF(pole, K): E z = coth K - 1 / K (4 SE)
    x_0 = S2.random_base(4000, torch.Generator().manual_seed(2), dtype=F64)
    xs = cnf.sample(4000, x_0=x_0)
    assert float(S2.constraint(xs).abs().max()) < 1e-12
    mean_z = 1 / math.tanh(K) - 1 / K
    assert abs(float(xs[:, 2].mean()) - mean_z) < 4 * float(xs[:, 2].std()) / math.sqrt(4000)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_divergence_of_projected_constant_field(n: int) -> None:
    sphere = Sphere(n - 1)
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, generator=g, dtype=F64)
    x = sphere.random_base(16, g, dtype=F64)
    v = tangent_field(lambda t, y: a.expand_as(y), sphere)
    _, div = divergence_exact(v, 0.0, x)
    torch.testing.assert_close(div, -(n - 1) * (x @ a), rtol=0, atol=1e-10)


def test_hutchinson_residual_is_unbiased() -> None:
    path = VMFMixturePath(S2, KappaSchedule(8.0, 2.0))
    field = ManifoldField(S2, hidden=16, depth=2).double()
    g = torch.Generator().manual_seed(3)
    centers = S2.random_base(5, g, dtype=F64)
    t = torch.full((6,), 0.7, dtype=F64)
    x = path.sample(t, centers, g)
    exact = lmc_residual(field, path, t, x, centers).residual.detach()
    draws = torch.stack(
        [
            lmc_residual(
                field, path, t, x, centers, divergence="hutchinson", generator=g
            ).residual.detach()
            for _ in range(600)
        ]
    )
    se = draws.std(0) / math.sqrt(600)
    assert bool(((draws.mean(0) - exact).abs() <= 4 * se + 1e-12).all())


def test_ppd_loss_trains_and_checks_inputs() -> None:
    torch.manual_seed(0)
    torus = FlatTorus(2)
    path = VonMisesMixturePath(torus, KappaSchedule(4.0, 1.0))
    g = torch.Generator().manual_seed(4)
    data = torus.random_base(20, g, dtype=F64)
    field = ManifoldField(torus, hidden=16, depth=2).double()
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = ppd_loss(field, path, data, l=2, n_points=128, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    l1 = ppd_loss(field, path, data, l=1, batch=5, generator=g)
    assert l1.ndim == 0 and torch.isfinite(l1)
    with pytest.raises(FlowfieldsError, match="l"):
        ppd_loss(field, path, data, l=3)
    with pytest.raises(FlowfieldsError, match="x_data"):
        ppd_loss(field, path, torch.zeros(4, 3, dtype=F64))
    with pytest.raises(FlowfieldsError, match="kappa_0"):
        KappaSchedule(fn=lambda t: 1.0 + t)
    with pytest.raises(FlowfieldsError, match="x"):
        lmc_residual(field, VMFMixturePath(S2), torch.ones(2, dtype=F64), torch.ones(2, 3), POLE)
