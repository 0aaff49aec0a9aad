"""Geometry of the manifolds: closed forms, round trips, base densities by quadrature."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.manifolds import (
    Euclidean,
    FlatTorus,
    ManifoldBase,
    Product,
    Sphere,
    sphere2_quadrature,
    torus_quadrature,
    wrap,
)

F64 = torch.float64
GEN = torch.Generator().manual_seed(0)
MANIFOLDS = [Sphere(1), Sphere(2), Sphere(5), FlatTorus(2), FlatTorus(4), Euclidean(3)]
MANIFOLDS.append(Product([Sphere(2), FlatTorus(1)]))


def _pts(m, n=64, seed=0):
    return m.random_base(n, torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("m", MANIFOLDS, ids=str)
def test_projx_idempotent_and_proju_tangent(m) -> None:
    z = torch.randn(32, m.ambient_dim, generator=GEN, dtype=F64) * 3
    p = m.projx(z)
    torch.testing.assert_close(m.projx(p), p, rtol=0, atol=1e-14)
    assert float(m.constraint(p).abs().max()) < 1e-14
    x = _pts(m, 32)
    u = torch.randn(32, m.ambient_dim, generator=GEN, dtype=F64)
    pu = m.proju(x, u)
    torch.testing.assert_close(m.proju(x, pu), pu, rtol=0, atol=1e-14)
    if isinstance(m, Sphere):
        assert float((x * pu).sum(-1).abs().max()) < 1e-14  # <x, P_x u> = 0


@pytest.mark.parametrize("m", MANIFOLDS, ids=str)
def test_exp_log_round_trip_and_distance(m) -> None:
    x, y, z = _pts(m, 64, 1), _pts(m, 64, 2), _pts(m, 64, 3)
    back = m.expmap(x, m.logmap(x, y))
    if isinstance(m, FlatTorus):
        back, y_ = wrap(back - y), torch.zeros_like(y)  # modulo 2 pi
        torch.testing.assert_close(back, y_, rtol=0, atol=1e-12)
    else:
        torch.testing.assert_close(back, y, rtol=0, atol=1e-12)
    d_xy, d_yx = m.dist(x, y), m.dist(y, x)
    torch.testing.assert_close(d_xy, d_yx, rtol=0, atol=1e-12)
    assert bool((m.dist(x, z) <= d_xy + m.dist(y, z) + 1e-12).all())
    torch.testing.assert_close(m.norm(x, m.logmap(x, y)), d_xy, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_sphere_distance_is_arccos_and_exp_has_unit_speed(n) -> None:
    s = Sphere(n)
    x, y = _pts(s, 50, 4), _pts(s, 50, 5)
    torch.testing.assert_close(s.dist(x, y), torch.arccos((x * y).sum(-1)), rtol=0, atol=1e-7)
    u = s.proju(x, torch.randn(50, n + 1, generator=GEN, dtype=F64))
    # exp_x(t u) traces a great circle: distance |t u| for |t u| < pi
    for tau in (1e-9, 0.3, 1.2):
        v = u / u.norm(dim=-1, keepdim=True) * tau
        torch.testing.assert_close(s.dist(x, s.expmap(x, v)), torch.full((50,), tau, dtype=F64))


def test_sphere_small_and_near_zero_vectors_are_stable() -> None:
    s = Sphere(2)
    for dtype in (torch.float32, F64):
        x = s.random_base(8, torch.Generator().manual_seed(6), dtype=dtype)
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(s.expmap(x, torch.zeros_like(x)), x, rtol=0, atol=4 * eps)
        assert float(s.logmap(x, x).abs().max()) <= 4 * eps
        tiny = s.proju(x, torch.full_like(x, 1e-12))
        y = s.expmap(x, tiny)
        assert torch.isfinite(s.logmap(x, y)).all()
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(s.logmap(x, x.detach()).sum() + s.expmap(x, 0 * x).sum(), x)
        assert torch.isfinite(g).all()


def test_torus_logmap_wraps() -> None:
    t = FlatTorus(1)
    x = torch.tensor([[3.0]], dtype=F64)
    y = torch.tensor([[-3.0]], dtype=F64)
    torch.testing.assert_close(t.logmap(x, y), torch.tensor([[2 * math.pi - 6.0]], dtype=F64))
    torch.testing.assert_close(t.dist(x, y), torch.tensor([2 * math.pi - 6.0], dtype=F64))


def test_base_densities_integrate_to_one() -> None:
    pts, w = sphere2_quadrature(16, 32)
    lp = Sphere(2).base_log_prob(pts)
    assert abs(float(lp[0]) + math.log(4 * math.pi)) < 1e-14
    assert abs(float((w * lp.exp()).sum()) - 1) < 1e-13
    for d in (1, 2, 3):
        pts, w = torus_quadrature(d, 12)
        lp = FlatTorus(d).base_log_prob(pts)
        assert abs(float(lp[0]) + d * math.log(2 * math.pi)) < 1e-13
        assert abs(float((w * lp.exp()).sum()) - 1) < 1e-12
    # S^2 uniform samples: E[z] = 0, E[z^2] = 1/3 (4-SE tests)
    x = Sphere(2).random_base(20000, torch.Generator().manual_seed(7), dtype=F64)
    z = x[:, 2]
    assert abs(float(z.mean())) < 4 * math.sqrt(1 / 3 / 20000)
    assert abs(float((z * z).mean()) - 1 / 3) < 4 * math.sqrt(4 / 45 / 20000)


def test_sphere_quadrature_is_exact_on_low_degree_polynomials() -> None:
    pts, w = sphere2_quadrature(8, 16)
    # int z^2 = 4 pi / 3, int x^2 y^2 = 4 pi / 15
    assert abs(float((w * pts[:, 2] ** 2).sum()) - 4 * math.pi / 3) < 1e-12
    assert abs(float((w * (pts[:, 0] * pts[:, 1]) ** 2).sum()) - 4 * math.pi / 15) < 1e-12


def test_bad_points_raise() -> None:
    s = Sphere(2)
    with pytest.raises(FlowfieldsError, match="x"):
        s.check_point(torch.ones(3, 3, dtype=F64))  # off the sphere
    with pytest.raises(FlowfieldsError, match="x"):
        s.check_point(torch.ones(3, 4, dtype=F64) / 2)  # wrong ambient dimension
    nan = s.random_base(3, dtype=F64)
    nan[0, 0] = float("nan")
    with pytest.raises(FlowfieldsError, match="x"):
        s.check_point(nan)
    with pytest.raises(FlowfieldsError, match="n"):
        Sphere(0)
    with pytest.raises(FlowfieldsError, match="factors"):
        Product([])
    with pytest.raises(FlowfieldsError, match="x"):
        ManifoldBase(s).log_prob(torch.ones(2, 3, dtype=F64))


def test_manifold_base_follows_module_dtype() -> None:
    base = ManifoldBase(Sphere(2)).to(F64)
    x = base.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.dtype == F64 and float(Sphere(2).constraint(x).abs().max()) < 1e-15
    torch.testing.assert_close(
        base.log_prob(x), torch.full((5,), -math.log(4 * math.pi), dtype=F64)
    )


def test_odeint_with_the_sphere_retraction_follows_a_rotation() -> None:
    """A rigid rotation about e_3 (a tangent field): every retracted stage stays on S^2 and the
    rk4 solution matches the closed-form rotation (second order: stage-wise retraction)."""
    from flowfields.integrate import ODEOptions, odeint

    s = Sphere(2)
    omega = torch.tensor([0.0, 0.0, 2.0], dtype=F64)

    def v(t, x):
        return torch.linalg.cross(omega.expand_as(x), x)

    x0 = s.random_base(16, torch.Generator().manual_seed(8), dtype=F64)
    c, si = math.cos(2.0), math.sin(2.0)
    rot = torch.tensor([[c, -si, 0.0], [si, c, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    exact = x0 @ rot.T
    errs = []
    for steps in (16, 32):
        sol = odeint(
            v, x0, [0.0, 1.0], ODEOptions("rk4", step_size=1 / steps), retraction=s.retraction
        )
        x1 = sol.x[-1]
        assert float(s.constraint(x1).abs().max()) < 1e-14
        errs.append(float((x1 - exact).abs().max()))
    assert errs[1] < 1e-2 and errs[0] / errs[1] > 3.5  # converges, second order (ratio ~4)
    with pytest.raises(FlowfieldsError, match="retraction"):
        odeint(v, x0, [0.0, 1.0], ODEOptions(), retraction=s.retraction)  # adaptive refuses
