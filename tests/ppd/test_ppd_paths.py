"""Kernel paths, samplers, the geodesic path, the minibatch bias, the TV bound, EM."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from scipy import special, stats

from flowfields.errors import FlowfieldsError
from flowfields.integrate import ODEOptions
from flowfields.manifolds import FlatTorus, Sphere, sphere2_quadrature, torus_quadrature, wrap
from flowfields.matching import CNF
from flowfields.paths import GeodesicPath
from flowfields.ppd import (
    KappaSchedule,
    ManifoldField,
    VMFMixturePath,
    VonMisesMixturePath,
    fit_vmf_mixture,
    log_vmf_normalizer,
    minibatch_bias,
    random_vmf_mixture,
    rfm_loss,
    sample_vmf_s2,
    sample_von_mises,
    tv_bound,
)

F64 = torch.float64
S2 = Sphere(2)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_vmf_normalizer_matches_scipy_bessel(n: int) -> None:
    kappa = torch.tensor([1e-6, 0.3, 2.0, 10.0, 60.0], dtype=F64)
    nu = (n + 1) / 2 - 1
    k = kappa.numpy()
    ref = nu * torch.log(kappa) - (nu + 1) * math.log(2 * math.pi)
    ref = ref - torch.as_tensor(special.ive(nu, k)).log() - kappa
    torch.testing.assert_close(log_vmf_normalizer(kappa, n), ref, rtol=1e-10, atol=1e-9)
    zero = log_vmf_normalizer(torch.zeros(1, dtype=F64), n)
    area = math.log(2) + (n + 1) / 2 * math.log(math.pi) - math.lgamma((n + 1) / 2)
    assert abs(float(zero) + area) < 1e-12
    kg = torch.tensor([0.0, 1e-5, 0.7], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: log_vmf_normalizer(q.abs() + 1e-3, n), (kg,))


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_paths_integrate_to_one(t: float) -> None:
    g = torch.Generator().manual_seed(0)
    pts, w = sphere2_quadrature(96, 192)
    centers = S2.random_base(7, g, dtype=F64)
    path = VMFMixturePath(S2, KappaSchedule(30.0, 1.0))
    lp = path.log_prob(torch.full((pts.shape[0],), t, dtype=F64), pts, centers)
    assert abs(float((w * lp.exp()).sum()) - 1) < 1e-9
    if t == 0.0:  # exactly uniform
        assert float((lp + math.log(4 * math.pi)).abs().max()) == 0.0
    torus = FlatTorus(2)
    pts, w = torus_quadrature(2, 128)
    tpath = VonMisesMixturePath(torus, KappaSchedule(20.0, 1.0))
    c = torus.random_base(5, g, dtype=F64)
    lp = tpath.log_prob(torch.full((pts.shape[0],), t, dtype=F64), pts, c)
    assert abs(float((w * lp.exp()).sum()) - 1) < 1e-9


def test_time_derivative_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(1)
    centers = S2.random_base(4, g, dtype=F64)
    path = VMFMixturePath(S2, KappaSchedule(12.0, 2.0))
    x = S2.random_base(5, g, dtype=F64)
    t = torch.tensor([0.1, 0.4, 0.5, 0.8, 0.95], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: path.log_prob(s, x, centers), (t,))


def test_vmf_and_von_mises_samplers_match_their_moments() -> None:
    g = torch.Generator().manual_seed(2)
    n = 20000
    mu = S2.random_base(1, g, dtype=F64).expand(n, 3)
    for kappa in (0.0, 0.5, 8.0, 200.0):
        x = sample_vmf_s2(mu, torch.full((n,), kappa, dtype=F64), g)
        c = (x * mu).sum(-1)
        mean = 0.0 if kappa == 0 else 1 / math.tanh(kappa) - 1 / kappa
        assert abs(float(c.mean()) - mean) < 4 * float(c.std()) / math.sqrt(n) + 1e-12
    for kappa in (0.0, 0.7, 3.0, 40.0):
        th = sample_von_mises(torch.zeros(n, dtype=F64), torch.tensor(kappa, dtype=F64), g)
        ref = stats.vonmises(kappa) if kappa > 0 else stats.uniform(-math.pi, 2 * math.pi)
        assert stats.kstest(th.numpy(), ref.cdf).pvalue > 1e-3


def test_geodesic_path_velocity_is_the_time_derivative() -> None:
    g = torch.Generator().manual_seed(3)
    for m in (S2, FlatTorus(3)):
        x0, x1 = m.random_base(16, g, dtype=F64), m.random_base(16, g, dtype=F64)
        path = GeodesicPath(m)
        t = torch.rand(16, generator=g, dtype=F64) * 0.98 + 0.01
        s = path.sample(x0, x1, t)
        h = 1e-6
        up, down = path.sample(x0, x1, t + h).x_t, path.sample(x0, x1, t - h).x_t
        diff = wrap(up - down) if isinstance(m, FlatTorus) else up - down
        fd = diff / (2 * h)  # central difference of the ambient coordinates
        torch.testing.assert_close(s.u_t, fd, rtol=1e-6, atol=1e-7)
        end = path.sample(x0, x1, torch.ones(16, dtype=F64)).x_t
        torch.testing.assert_close(m.dist(end, x1), torch.zeros(16, dtype=F64), atol=1e-7, rtol=0)
    with pytest.raises(FlowfieldsError, match="x_1"):
        rfm_loss(ManifoldField(S2, 8, 1).double(), S2, torch.ones(4, 3, dtype=F64))


def test_rfm_loss_is_zero_mean_residual_free_for_the_conditional_field() -> None:
    field = ManifoldField(S2, hidden=16, depth=2).double()
    g = torch.Generator().manual_seed(4)
    x1 = S2.random_base(64, g, dtype=F64)
    loss = rfm_loss(field, S2, x1, generator=g)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in field.parameters())


def test_minibatch_bias_is_negative_and_shrinks() -> None:
    g = torch.Generator().manual_seed(5)
    data = random_vmf_mixture(4, (5.0, 30.0), g).sample(400, g)
    path = VMFMixturePath(S2, KappaSchedule(50.0, 2.0))
    rows = minibatch_bias(path, data, [8, 32, 128, 400], n_points=128, n_draws=24, generator=g)
    biases = [r.bias for r in rows]
    assert abs(rows[-1].bias) < 1e-12  # the full data set is the exact log-sum-exp
    for r in rows[:-1]:
        assert r.bias < -3 * r.stderr  # Jensen: negative, significantly
    assert biases[0] < biases[1] < biases[2] < 0


def test_tv_is_bounded_by_half_ppd1() -> None:
    pts, w = sphere2_quadrature(32, 64)
    g = torch.Generator().manual_seed(6)
    centers = S2.random_base(3, g, dtype=F64)
    path = VMFMixturePath(S2, KappaSchedule(6.0, 1.0))
    for seed in range(3):
        torch.manual_seed(seed)
        field = ManifoldField(S2, hidden=16, depth=2).double()
        b = tv_bound(field, path, centers, pts, w, n_t=12, steps=24)
        assert 0 < b.tv <= 0.5 * b.ppd_1 + 1e-3, (seed, b)
    # on S^1 (the midpoint rule is exact for trigonometric degree < n), fields scaled up
    from flowfields.manifolds import circle_quadrature

    s1 = Sphere(1)
    pts1, w1 = circle_quadrature(256)
    assert abs(float((w1 * pts1[:, 0] ** 2).sum()) - math.pi) < 1e-12
    centers1 = s1.random_base(3, g, dtype=F64)
    path1 = VMFMixturePath(s1, KappaSchedule(6.0, 1.0))
    for scale in (1.0, 5.0):
        torch.manual_seed(7)
        net = ManifoldField(s1, hidden=16, depth=2).double()
        field1 = lambda t, x, s=scale, f=net: s * f(t, x)  # noqa: E731
        b = tv_bound(field1, path1, centers1, pts1, w1, n_t=12, steps=32)
        assert 0.05 < b.tv <= 0.5 * b.ppd_1 + 1e-3, (scale, b)


def test_em_recovers_a_vmf_mixture() -> None:
    g = torch.Generator().manual_seed(7)
    truth = random_vmf_mixture(3, (10.0, 40.0), g)
    train, test = truth.sample(3000, g), truth.sample(2000, g)
    fitted = fit_vmf_mixture(train, 3, iters=60, generator=g)
    nll_true = -float(truth.log_prob(test).mean())
    nll_fit = -float(fitted.log_prob(test).mean())
    assert nll_fit - nll_true < 0.02
    one = fit_vmf_mixture(train, 1, generator=g)
    assert -float(one.log_prob(test).mean()) > nll_true + 0.1


def test_manifold_cnf_density_integrates_to_one_on_s2_and_t2() -> None:
    torch.manual_seed(0)
    field = ManifoldField(S2, hidden=16, depth=2).double()
    cnf = CNF(field, 3, manifold=S2, solver=ODEOptions("rk4", step_size=1 / 16)).double()
    pts, w = sphere2_quadrature(48, 96)
    with torch.no_grad():
        lp = cnf.log_prob(pts)
    assert float(lp.std()) > 0.05  # not the uniform density
    assert abs(float((w * lp.exp()).sum()) - 1) < 1e-4
    hutch = cnf.log_prob(
        pts[:8], estimator="hutchinson", generator=torch.Generator().manual_seed(0)
    )
    assert hutch.shape == (8,) and torch.isfinite(hutch).all()
    with pytest.raises(FlowfieldsError, match="x"):
        cnf.log_prob(torch.ones(3, 3, dtype=F64))
    with pytest.raises(FlowfieldsError, match="dim"):
        CNF(field, 2, manifold=S2)
    x = cnf.sample(5, generator=torch.Generator().manual_seed(1))
    assert float(S2.constraint(x).abs().max()) < 1e-12
    retracted = CNF(field, 3, manifold=S2, solver=ODEOptions("rk4", step_size=1 / 16), retract=True)
    xr = retracted.double().sample(5, generator=torch.Generator().manual_seed(1))
    assert float((xr - x).abs().max()) < 1e-3  # same flow, a lower-order scheme
    assert float(wrap(torch.tensor([4.0])).item()) == pytest.approx(4.0 - 2 * math.pi)


def test_airports_are_3376_points_on_s2_in_the_us() -> None:
    pytest.importorskip("vega_datasets")
    from flowfields.ppd import airports_s2, lat_lon_to_s2

    x = airports_s2()
    assert x.shape == (3376, 3) and float(S2.constraint(x).abs().max()) < 1e-12
    # the mean direction points into North America (lat ~ 37 N, lon ~ 97 W)
    mean = S2.projx(x.mean(0, keepdim=True))
    na = lat_lon_to_s2(torch.tensor([37.0], dtype=F64), torch.tensor([-97.0], dtype=F64))
    assert float(S2.dist(mean, na)) < 0.15
    pole = lat_lon_to_s2(torch.tensor([90.0], dtype=F64), torch.tensor([10.0], dtype=F64))
    torch.testing.assert_close(pole, torch.tensor([[0.0, 0.0, 1.0]], dtype=F64))


def test_minibatch_gradient_bias_is_significant_and_shrinks() -> None:
    from flowfields.ppd import minibatch_gradient_bias

    g = torch.Generator().manual_seed(5)
    data = random_vmf_mixture(4, (5.0, 30.0), g).sample(400, g)
    path = VMFMixturePath(S2, KappaSchedule(50.0, 2.0))
    torch.manual_seed(0)
    field = ManifoldField(S2, 16, 2).double()
    rows = minibatch_gradient_bias(field, path, data, [8, 32, 400], n_draws=16, generator=g)
    assert rows[-1].bias < 1e-12  # the full data set
    for r in rows[:-1]:
        assert r.bias > 3 * r.stderr  # beyond the Monte-Carlo error of the mean: bias
    assert rows[0].bias > rows[1].bias


def test_mean_offset_removes_the_noise_of_the_mean() -> None:
    from flowfields.ppd import mean_offset

    g = torch.Generator().manual_seed(8)
    ref = torch.zeros(2000, dtype=F64)
    for offset in (0.0, 0.5):
        shift = torch.zeros(2000, dtype=F64)
        shift[0] = offset * math.sqrt(2000)  # |E X - ref| = offset * sqrt(2000)
        est = []
        for _ in range(50):
            draws = shift + torch.randn(8, 2000, generator=g, dtype=F64)  # noise ~ sqrt(2000/8)
            bias, se = mean_offset(draws, ref)
            est.append(bias**2)
            assert abs(se - math.sqrt(2000 / 8)) < 0.1 * math.sqrt(2000 / 8)
        # the squared estimate is unbiased: its mean over 50 repetitions is the true value
        # (the raw |mean - ref|^2 would sit 250 above it); sd of the mean ~ 2.5 + offset term
        true = offset**2 * 2000
        assert abs(statistics.fmean(est) - true) < 4 * (math.sqrt(2 * 2000) / 8 + 8) + 0.1 * true
