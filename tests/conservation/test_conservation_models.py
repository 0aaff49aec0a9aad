"""Space-time density/flux models, Gaussian Newtonian potentials and the Hodge model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch

from flowfields.conservation import (
    HodgeDecomposition,
    PositiveDensityFlux,
    SpaceTimeDivFree,
    continuity_residual,
    gaussian_log_density,
    gaussian_newtonian_grad,
    gradient,
    kinetic_energy,
    regularized_lower_gamma_ratio,
)
from flowfields.errors import FlowfieldsError
from flowfields.integrate import ODEOptions


def _laplacian_of_gradient(grad_fn, x: torch.Tensor) -> torch.Tensor:
    """Brute force: div of a gradient field, one autograd call per coordinate."""
    x = x.clone().requires_grad_()
    g = grad_fn(x)
    return sum(
        torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1])
    )


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 10])
def test_lower_gamma_ratio_matches_scipy(d):
    s = torch.tensor([1e-8, 0.1, 0.9, 1.7, 3.4, 5.9, 12.0, 40.0], dtype=torch.float64)
    ours = regularized_lower_gamma_ratio(d, s).numpy()
    ref = scipy.special.gammainc(d / 2, s.numpy()) / s.numpy() ** (d / 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-11)
    at_zero = regularized_lower_gamma_ratio(d, torch.zeros(1, dtype=torch.float64))
    np.testing.assert_allclose(at_zero.numpy(), 1 / scipy.special.gamma(d / 2 + 1), rtol=1e-13)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_newtonian_potential_laplacian_is_gaussian_density(d):
    sigma = torch.tensor(0.7, dtype=torch.float64)
    y = torch.randn(32, d, dtype=torch.float64)
    y[0] = 0.0  # the centre, where the closed form is 0/0 without the series
    lap = _laplacian_of_gradient(lambda z: gaussian_newtonian_grad(z, sigma), y)
    dens = torch.exp(gaussian_log_density(y, sigma))
    torch.testing.assert_close(lap, dens, rtol=1e-10, atol=1e-14)


def test_newtonian_potential_laplacian_integrates_to_one():
    """2-D quadrature of div ∇Φ over a box of ±8σ, and Gauss's law on a circle."""
    sigma = 0.5
    n = 161
    g = torch.linspace(-4.0, 4.0, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    lap = _laplacian_of_gradient(lambda z: gaussian_newtonian_grad(z, sigma), pts).reshape(n, n)
    h = (g[1] - g[0]).item()
    total = torch.trapezoid(torch.trapezoid(lap, dx=h), dx=h).item()
    assert abs(total - 1.0) < 1e-6
    # flux through the circle of radius R equals the Gaussian mass inside: 1 - exp(-R²/2σ²)
    radius = 0.8
    theta = torch.linspace(0, 2 * math.pi, 401, dtype=torch.float64)[:-1]
    normal = torch.stack([torch.cos(theta), torch.sin(theta)], -1)
    flux = (gaussian_newtonian_grad(radius * normal, sigma) * normal).sum(-1).mean()
    flux = flux * 2 * math.pi * radius
    assert abs(flux.item() - (1 - math.exp(-(radius**2) / (2 * sigma**2)))) < 1e-12


@pytest.mark.parametrize("d", [1, 2, 3])
def test_positive_model_continuity_positivity_and_laplacian(d, dtype):
    model = PositiveDensityFlux(d, n_components=3, hidden=16).to(dtype)
    x = 1.5 * torch.randn(24, d, dtype=dtype)
    t = torch.rand(24, dtype=dtype)
    rho, j = model.rho_flux(t, x)
    assert (rho > 0).all()
    res = continuity_residual(model.rho_flux, t, x)
    scale = rho.abs().max() + j.abs().max()
    assert res.abs().max() < (1e-12 if dtype == torch.float64 else 1e-5) * scale
    lap = _laplacian_of_gradient(lambda z: model.grad_b0(t, z), x)
    torch.testing.assert_close(lap, rho)
    torch.testing.assert_close(model.velocity(t, x), j / rho.unsqueeze(-1))


def test_positive_model_time_derivative_of_density_is_nonzero():
    """The residual test is not vacuous: ∂_t ρ and div j are each far from zero."""
    model = PositiveDensityFlux(2, n_components=2, hidden=16).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64)
    from torch.func import jvp

    _, drho = jvp(lambda s: model.rho_flux(s, x)[0], (t,), (torch.ones_like(t),))
    assert drho.abs().max() > 1e-2
    # a broken flux (sign flipped) leaves a residual of 2 ∂_t ρ
    res = continuity_residual(
        lambda s, y: (model.rho_flux(s, y)[0], -model.rho_flux(s, y)[1]), t, x
    )
    torch.testing.assert_close(res, 2 * drho)


def test_positive_model_density_integrates_to_one_and_samples_match():
    torch.manual_seed(1)
    model = PositiveDensityFlux(2, n_components=3, hidden=16, init_mean_scale=0.5).double()
    g = torch.linspace(-9, 9, 181, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    h = (g[1] - g[0]).item()
    for t in (0.0, 0.37, 1.0):
        with torch.no_grad():
            rho = torch.exp(model.log_rho(t, pts)).reshape(181, 181)
        total = torch.trapezoid(torch.trapezoid(rho, dx=h), dx=h).item()
        assert abs(total - 1.0) < 1e-6, (t, total)
    # samples: mean of ρ_t matches the mixture mean (40k samples, 6-sigma band)
    t = 0.6
    with torch.no_grad():
        xs = model.sample_at(t, 40_000, generator=torch.Generator().manual_seed(0))
        c = model.components(t)
    w = torch.exp(c["log_w"])
    mean = (w[:, None] * c["mu"][0]).sum(0)
    second = (w * (c["std"][0] ** 2 * 2 + (c["mu"][0] ** 2).sum(-1))).sum()
    sd = torch.sqrt(second - (mean**2).sum())
    assert ((xs.mean(0) - mean).abs() < 6 * sd / math.sqrt(40_000)).all()


def test_kinetic_energy_closed_form_for_linear_gaussian_path():
    """One Gaussian, linear mean and geometric σ: E = |Δm|² + d ∫ σ'² dt in closed form."""
    model = PositiveDensityFlux(2, n_components=1, correction=False).double()
    with torch.no_grad():
        model.mean_0.copy_(torch.tensor([[-1.0, 0.5]]))
        model.mean_1.copy_(torch.tensor([[2.0, -0.5]]))
        model.log_std_0.fill_(math.log(0.5))
        model.log_std_1.fill_(math.log(1.5))
        model.time_net[-1].weight.zero_()
        model.time_net[-1].bias.zero_()
    # with a zero network, log σ is linear in t (geometric σ): energy = |Δm|² + d ∫ σ'² dt
    exact = 9.0 + 1.0 + 2 * (math.log(3.0) * (1.5**2 - 0.5**2) / 2)
    est = model.kinetic_energy(n_t=16, n_x=20_000, generator=torch.Generator().manual_seed(0))
    assert abs(est.item() - exact) / exact < 0.01


def test_spacetime_model_continuity_both_constructions(dtype):
    for construction in ("matrix", "vector"):
        model = SpaceTimeDivFree(2, construction=construction, hidden=16, depth=2).to(dtype)
        x = torch.randn(10, 2, dtype=dtype)
        t = torch.rand(10, dtype=dtype)
        rho, j = model(t, x)
        res = continuity_residual(model.rho_flux, t, x)
        assert rho.abs().max() > 1e-4
        scalar_t = continuity_residual(model.rho_flux, 0.25, x)  # a scalar time works too
        assert scalar_t.abs().max() < 1e-5
        assert res.abs().max() < (1e-12 if dtype == torch.float64 else 1e-5) * (
            rho.abs().max() + j.abs().max()
        )


@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_mass_constant_on_torus_not_on_the_plane(construction):
    """Periodic space-time model: ∫_torus ρ dx constant in t; the non-periodic one leaks."""
    torch.manual_seed(3)
    n = 48
    g = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)

    def masses(model):
        out = []
        for t in (0.0, 0.5, 1.0):
            with torch.no_grad():
                rho, _ = model(t, pts)
            out.append(rho.mean().item() * (2 * math.pi) ** 2)  # spectrally accurate on a torus
        return out

    kw = dict(construction=construction, hidden=32, depth=2)
    torus = SpaceTimeDivFree(2, periodic=True, **kw).double()
    m = masses(torus)
    assert max(m) - min(m) < 1e-9 * (1 + abs(m[0]))
    plane = SpaceTimeDivFree(2, **kw).double()
    m = masses(plane)
    assert max(m) - min(m) > 1e-3


def test_gradient_and_hodge_model(dtype):
    x = torch.randn(9, 3, dtype=dtype)
    value, grad = gradient(lambda y: (y**3).sum(-1), x)
    torch.testing.assert_close(grad, 3 * x**2)
    torch.testing.assert_close(value, (x**3).sum(-1))
    model = HodgeDecomposition(3, hidden=16, depth=2).to(dtype)
    grad_phi, w = model(x)
    xr = x.clone().requires_grad_()
    gref = torch.autograd.grad(model.phi(xr).sum(), xr)[0]
    torch.testing.assert_close(grad_phi, gref)
    loss = model.loss(x, grad_phi.detach() + w.detach())
    assert loss.item() < (1e-20 if dtype == torch.float64 else 1e-10)
    loss = model.loss(x, torch.zeros_like(x))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_kinetic_energy_helper():
    v = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    assert kinetic_energy(v).item() == pytest.approx(13.0)
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert kinetic_energy(v, w).item() == pytest.approx((25 + 3) / 4)


def test_bad_input_raises():
    model = PositiveDensityFlux(2)
    with pytest.raises(FlowfieldsError, match="x"):
        model.rho_flux(0.5, torch.randn(4, 3))
    bad = torch.randn(4, 2)
    bad[0, 0] = float("inf")
    with pytest.raises(FlowfieldsError, match="non-finite"):
        model.velocity(0.5, bad)
    with pytest.raises(FlowfieldsError, match="t"):
        model.velocity(torch.rand(3), torch.randn(4, 2))
    with pytest.raises(FlowfieldsError, match="n_components"):
        PositiveDensityFlux(2, n_components=0)
    with pytest.raises(FlowfieldsError, match="construction"):
        SpaceTimeDivFree(2, construction="stream")
    with pytest.raises(FlowfieldsError, match="x"):
        SpaceTimeDivFree(2)(0.1, torch.randn(3, 1))
    with pytest.raises(FlowfieldsError, match="dim"):
        HodgeDecomposition(1)
    with pytest.raises(FlowfieldsError, match="n"):
        model.sample_at(0.5, 0)


def test_positive_model_velocity_is_a_cnf_reproducing_rho():
    """Exact continuity => the CNF of v = j/ρ started from ρ_0 has density ρ_1 (change of vars)."""
    from flowfields.matching import CNF

    torch.manual_seed(2)
    model = PositiveDensityFlux(2, n_components=2, hidden=16, init_mean_scale=1.0).double()

    class _Rho0:
        def sample(self, n, generator=None):
            return model.sample_at(0.0, n, generator=generator)

        def log_prob(self, x):
            return model.log_rho(0.0, x)

    cnf = CNF(model, dim=2, base=_Rho0())
    x = model.sample_at(1.0, 12).detach()
    with torch.no_grad():
        log_p = cnf.log_prob(x, solver=ODEOptions("dopri5", rtol=1e-9, atol=1e-9))
        ref = model.log_rho(1.0, x)
    assert model.correction is not None  # the learned div(ρA) flux is part of v here
    assert (ref - model.log_rho(0.0, x)).abs().max() > 0.1  # ρ really moves between 0 and 1
    torch.testing.assert_close(log_p, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("d", [1, 3])
def test_newtonian_potential_laplacian_integrates_to_one_in_1d_and_3d(d):
    """Trapezoid quadrature of div ∇Φ_σ (autograd) over a box of ±8σ: total mass 1."""
    sigma = 0.5
    n = 321 if d == 1 else 41
    g = torch.linspace(-4.0, 4.0, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(*([g] * d), indexing="ij"), -1).reshape(-1, d)
    lap = _laplacian_of_gradient(lambda z: gaussian_newtonian_grad(z, sigma), pts)
    lap = lap.reshape(*([n] * d))
    h = (g[1] - g[0]).item()
    for _ in range(d):
        lap = torch.trapezoid(lap, dx=h)
    assert abs(lap.item() - 1.0) < 1e-6


def test_more_bad_input_raises():
    bad = torch.randn(4, 2, dtype=torch.float64)
    bad[2, 1] = float("nan")
    model = SpaceTimeDivFree(2, hidden=8, depth=1).double()
    with pytest.raises(FlowfieldsError, match="x"):
        continuity_residual(model.rho_flux, 0.5, bad)
    with pytest.raises(FlowfieldsError, match="non-finite"):
        model.rho_flux(0.5, bad)
    with pytest.raises(FlowfieldsError, match="t"):
        continuity_residual(model.rho_flux, torch.rand(3), torch.randn(4, 2))
    hodge = HodgeDecomposition(2, hidden=8, depth=1).double()
    with pytest.raises(FlowfieldsError, match="non-finite"):
        hodge(bad)
    with pytest.raises(FlowfieldsError, match="x"):
        hodge(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(FlowfieldsError, match="field"):
        hodge.loss(torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 3))
    nan_t = torch.tensor([0.1, float("nan"), 0.3, 0.4], dtype=torch.float64)
    with pytest.raises(FlowfieldsError, match=r"t: .*non-finite"):
        model.rho_flux(nan_t, torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(FlowfieldsError, match=r"t: .*non-finite"):
        continuity_residual(model.rho_flux, nan_t, torch.randn(4, 2, dtype=torch.float64))
    flow = PositiveDensityFlux(2, n_components=2)
    with pytest.raises(FlowfieldsError, match=r"t: .*non-finite"):
        flow.velocity(float("inf"), torch.randn(4, 2))
    with pytest.raises(FlowfieldsError, match="x_0"):
        flow.init_endpoints(torch.randn(8, 3), torch.randn(8, 2))
    with pytest.raises(FlowfieldsError, match="x_1"):
        flow.init_endpoints(torch.randn(8, 2), torch.full((8, 2), float("inf")))
