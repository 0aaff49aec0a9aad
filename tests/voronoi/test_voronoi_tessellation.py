"""Voronoi tessellation and cell maps: membership, inverse, log-det, ray cast (vs scipy LP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from flowfields.errors import FlowfieldsError
from flowfields.voronoi import (
    VoronoiTessellation,
    cell_map,
    cell_map_inverse,
    nearest_anchor,
    ray_length,
)

F64 = torch.float64


def _tess(groups: tuple[int, ...], K: int, D: int, seed: int, dtype=F64) -> VoronoiTessellation:
    g = torch.Generator().manual_seed(seed)
    lo = -1.0 - torch.rand(*groups, D, generator=g, dtype=F64)
    hi = 1.0 + torch.rand(*groups, D, generator=g, dtype=F64)
    anchors = lo.unsqueeze(-2) + (hi - lo).unsqueeze(-2) * (
        0.05 + 0.9 * torch.rand(*groups, K, D, generator=g, dtype=F64)
    )
    return VoronoiTessellation(anchors, lo, hi).to(dtype)


def _points(tess: VoronoiTessellation, n: int, seed: int, dtype=F64, decades: float = 6.0):
    """Points of R^D at scales 1e-3..1e(decades-3) and random cells, batch (n, *groups)."""
    g = torch.Generator().manual_seed(seed)
    groups = tuple(tess.raw.shape[:-2])
    x = torch.randn(n, *groups, tess.dim, generator=g, dtype=F64)
    x = x * 10 ** (decades * torch.rand(n, *groups, 1, generator=g, dtype=F64) - 3)
    k = torch.randint(0, tess.n_cells, (n, *groups), generator=g)
    return x.to(dtype), k


CASES = [((), 2, 1), ((), 5, 2), ((), 8, 3), ((), 30, 2), ((4,), 6, 2), ((2, 3), 4, 3)]


@pytest.mark.parametrize("groups,K,D", CASES)
def test_cell_membership_and_box(groups, K, D) -> None:
    tess = _tess(groups, K, D, seed=K * 10 + D)
    x, k = _points(tess, 400, seed=1)
    with torch.no_grad():
        y, _ = tess(x, k)
        assert torch.equal(tess.nearest(y), k)
        assert bool(tess.in_box(y).all())
        assert bool(((y > tess.lower) & (y < tess.upper)).all())


@pytest.mark.parametrize("groups,K,D", CASES)
def test_inverse_round_trip_and_log_dets_cancel(groups, K, D) -> None:
    tess = _tess(groups, K, D, seed=K + D)
    # |x| <= 1e2: at t = e^theta |x| / lam* ~ 1e6 the image sits 1e-6 lam* from a face and
    # float64 keeps only ~1e-10 of the relative distance (an inherent loss, not the formula's)
    x, k = _points(tess, 300, seed=2, decades=5.0)
    theta = torch.randn(k.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    with torch.no_grad():
        y, ld = tess(x, k, theta)
        xi, ldi, kk = tess.inverse(y, None, theta)
    assert torch.equal(kk, k)
    torch.testing.assert_close(xi, x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ld + ldi, torch.zeros_like(ld), rtol=0, atol=1e-10)


def test_inverse_round_trip_float32() -> None:
    tess = _tess((), 6, 2, seed=5, dtype=torch.float32)
    x, k = _points(tess, 500, seed=6, dtype=torch.float32)
    x = x.clamp(-100, 100)  # alpha <= ~0.99: far enough from the faces for float32
    with torch.no_grad():
        y, _ = tess(x, k)
        xi, _, _ = tess.inverse(y, k)
    torch.testing.assert_close(xi, x, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("D", [1, 2, 3])
def test_log_det_matches_autograd_jacobian(D) -> None:
    tess = _tess((), 7, D, seed=D)
    x, k = _points(tess, 12, seed=D + 7)
    theta = torch.tensor(0.3, dtype=F64)
    a, lo, hi = tess.anchors.detach(), tess.lower.detach(), tess.upper.detach()
    _, ld = cell_map(x, k, a, lo, hi, theta)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(
            lambda xi, i=i: cell_map(xi[None], k[i : i + 1], a, lo, hi, theta)[0][0], x[i]
        )
        sign, logabs = torch.linalg.slogdet(jac)
        assert float(sign) > 0
        assert abs(float(logabs - ld[i])) < 1e-10
    # the inverse's log-det too
    y, _ = cell_map(x, k, a, lo, hi, theta)
    _, ldi = cell_map_inverse(y, k, a, lo, hi, theta)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(
            lambda yi, i=i: cell_map_inverse(yi[None], k[i : i + 1], a, lo, hi, theta)[0][0], y[i]
        )
        assert abs(float(torch.linalg.slogdet(jac)[1] - ldi[i])) < 1e-9


def test_polar_form_of_the_log_det() -> None:
    """(D - 1) log(alpha lam* / r) + theta - 2 log(1 + t), t = e^theta r / lam*."""
    tess = _tess((), 9, 3, seed=11)
    x, k = _points(tess, 200, seed=12)
    theta = 0.7
    with torch.no_grad():
        y, ld = tess(x, k, theta)
        r = x.norm(dim=-1)
        lam = tess.ray_length(x, k)
        t = np.exp(theta) * r / lam
        alpha = t / (1 + t)
        polar = 2 * torch.log(alpha * lam / r) + theta - 2 * torch.log1p(t)
        # and the output radius is alpha lam* along the same ray
        v = y - tess.anchors[k]
        torch.testing.assert_close(v.norm(dim=-1), alpha * lam, rtol=1e-12, atol=0)
        torch.testing.assert_close((v * x).sum(-1), v.norm(dim=-1) * r, rtol=1e-12, atol=0)
    torch.testing.assert_close(ld, polar, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("D", [2, 3])
def test_ray_length_matches_a_linear_program(D) -> None:
    """lam* = max lam s.t. a_k + lam delta in cell k (scipy HiGHS), to 1e-8."""
    tess = _tess((), 10, D, seed=20 + D)
    a = tess.anchors.detach().numpy()
    lo, hi = tess.lower.detach().numpy(), tess.upper.detach().numpy()
    g = torch.Generator().manual_seed(D)
    delta = torch.randn(25, D, generator=g, dtype=F64)
    delta = delta / delta.norm(dim=-1, keepdim=True)
    k = torch.randint(0, 10, (25,), generator=g)
    with torch.no_grad():
        lam = tess.ray_length(delta, k).numpy()
    for i in range(25):
        ki, d = int(k[i]), delta[i].numpy()
        rows, rhs = [], []
        for j in range(10):
            if j != ki:  # 2 y.(a_j - a_k) <= |a_j|^2 - |a_k|^2 with y = a_k + lam d
                n = 2 * (a[j] - a[ki])
                rows.append([n @ d])
                rhs.append(a[j] @ a[j] - a[ki] @ a[ki] - n @ a[ki])
        for dd in range(D):
            rows += [[d[dd]], [-d[dd]]]
            rhs += [hi[dd] - a[ki, dd], a[ki, dd] - lo[dd]]
        res = linprog([-1.0], A_ub=np.array(rows), b_ub=np.array(rhs), bounds=[(0, None)])
        assert res.status == 0
        assert abs(res.x[0] - lam[i]) < 1e-8 * max(1.0, lam[i])


def test_gradcheck_away_from_faces() -> None:
    tess = _tess((), 5, 2, seed=30)
    x, k = _points(tess, 6, seed=31)
    x = x / x.norm(dim=-1, keepdim=True)  # moderate radius
    a = tess.anchors.detach().clone().requires_grad_(True)
    lo = tess.lower.detach().clone().requires_grad_(True)
    hi = tess.upper.detach().clone().requires_grad_(True)
    theta = torch.full((6,), 0.2, dtype=F64, requires_grad=True)
    xr = x.clone().requires_grad_(True)

    def fwd(x_, a_, lo_, hi_, th_):
        y, ld = cell_map(x_, k, a_, lo_, hi_, th_)
        return y, ld

    def inv(y_, a_, lo_, hi_, th_):
        return cell_map_inverse(y_, k, a_, lo_, hi_, th_)

    assert torch.autograd.gradcheck(fwd, (xr, a, lo, hi, theta), eps=1e-6, atol=1e-6)
    y = cell_map(x, k, a.detach(), lo.detach(), hi.detach(), 0.2)[0].requires_grad_(True)
    assert torch.autograd.gradcheck(inv, (y, a, lo, hi, theta), eps=1e-6, atol=1e-6)
    # the tessellation's own parameters (anchors through tanh, the learnable box)
    loss = tess(x, k)[1].sum() + tess(x, k)[0].square().sum()
    loss.backward()
    for p in tess.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_degenerate_cases_give_no_nan() -> None:
    anchors = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, 0.5], [0.5, 0.5 + 1e-300]], dtype=F64)
    tess = VoronoiTessellation(anchors, -1.0, 1.0)
    x = torch.tensor([[0.0, 0.0], [0.3, -0.2], [1e-300, 0.0], [5.0, 5.0]], dtype=F64)
    k = torch.tensor([0, 1, 2, 3])
    x.requires_grad_(True)
    y, ld = tess(x, k)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    torch.testing.assert_close(y[0], tess.anchors[0])  # x = 0 maps to the anchor
    (y.sum() + ld.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in tess.parameters())
    # y exactly at an anchor, inverted
    xi, ldi, _ = tess.inverse(tess.anchors.detach(), torch.arange(4))
    assert torch.isfinite(xi).all() and torch.isfinite(ldi).all()
    assert float(xi.detach().abs().max()) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
def test_anchors_stay_strictly_inside_the_box(dtype) -> None:
    tess = _tess((), 6, 2, seed=40, dtype=dtype)
    with torch.no_grad():
        tess.raw.copy_(torch.tensor([[60.0, -60.0], [1e3, 1e3], [-1e3, 0.0]] * 2, dtype=dtype))
    a, lo, hi = tess.anchors, tess.lower, tess.upper
    assert bool(((a > lo) & (a < hi)).all())
    x, k = _points(tess, 100, seed=41, dtype=dtype)
    with torch.no_grad():
        y, ld = tess(x, k)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    # and after optimising anchors against the upper faces with a large learning rate (box
    # fixed, raw pushed to tanh = 1 in floating point)
    tess = _tess((), 6, 2, seed=42, dtype=dtype)
    opt = torch.optim.SGD([tess.raw], lr=50.0)
    for _ in range(20):
        opt.zero_grad()
        (-tess.anchors.sum()).backward()
        opt.step()
    assert float(torch.tanh(tess.raw.detach()).min()) == 1.0
    a, lo, hi = tess.anchors, tess.lower, tess.upper
    assert bool(((a > lo) & (a < hi)).all())


def test_from_points_uses_kmeans_centres() -> None:
    from flowfields.linalg import kmeans

    g = torch.Generator().manual_seed(0)
    pts = torch.randn(300, 2, generator=g, dtype=F64)
    tess = VoronoiTessellation.from_points(pts, 5, generator=torch.Generator().manual_seed(1))
    ref = kmeans(pts, 5, generator=torch.Generator().manual_seed(1), init="k-means++").centres
    torch.testing.assert_close(tess.anchors, ref, rtol=1e-9, atol=1e-12)
    assert bool(tess.in_box(pts).all())
    assert torch.equal(nearest_anchor(pts, tess.anchors), tess.nearest(pts))


def test_ray_length_function_is_scale_free() -> None:
    tess = _tess((), 4, 2, seed=50)
    d = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=F64)
    k = torch.tensor([0, 3])
    a, lo, hi = tess.anchors.detach(), tess.lower.detach(), tess.upper.detach()
    torch.testing.assert_close(ray_length(d, k, a, lo, hi), ray_length(7 * d, k, a, lo, hi))


def test_bad_input_raises() -> None:
    tess = _tess((), 4, 2, seed=60)
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(FlowfieldsError, match="k"):
        tess(x, torch.tensor([0, 4, 1]))
    with pytest.raises(FlowfieldsError, match="k"):
        tess(x, torch.tensor([0, -1, 1]))
    with pytest.raises(FlowfieldsError, match="k"):
        tess(x, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(FlowfieldsError, match="x"):
        tess(torch.zeros(3, 3, dtype=F64), torch.tensor([0, 1, 2]))
    bad = x.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(FlowfieldsError, match="x"):
        tess(bad, torch.tensor([0, 1, 2]))
    with pytest.raises(FlowfieldsError, match="y"):
        tess.inverse(bad)
    with pytest.raises(FlowfieldsError, match="direction"):
        tess.ray_length(x, torch.tensor([0, 1, 2]))
    with pytest.raises(FlowfieldsError, match="K >= 2"):
        VoronoiTessellation(torch.zeros(1, 2), -1.0, 1.0)
    with pytest.raises(FlowfieldsError, match="inside the box"):
        VoronoiTessellation(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), -1.0, 1.0)
    with pytest.raises(FlowfieldsError, match="upper"):
        VoronoiTessellation(torch.tensor([[0.0, 0.0], [0.5, 0.0]]), 1.0, -1.0)


@pytest.mark.parametrize("K,D", [(16, 2), (300, 2), (1024, 4), (1024, 8), (512, 8)])
def test_nearest_anchor_both_paths_match_exact_distances(K, D) -> None:
    """Brute force (few anchors or many dimensions) and the k-d tree (many anchors, few
    dimensions; see _use_tree) agree with the argmin of the exact float64 distances, for
    batched point shapes, in float64 and (to 0.5% of points, the brute force's cancellation)
    float32."""
    from flowfields.voronoi.tessellation import _use_tree

    g = torch.Generator().manual_seed(K + D)
    a = torch.rand(K, D, generator=g, dtype=F64)
    y = torch.rand(3, 100, D, generator=g, dtype=F64)
    exact = torch.cdist(y.reshape(-1, D), a).argmin(-1).reshape(3, 100)
    assert torch.equal(nearest_anchor(y, a), exact)
    got32 = nearest_anchor(y.float(), a.float())
    assert got32.shape == (3, 100) and float((got32 != exact).double().mean()) <= 5e-3
    assert _use_tree(y, a) == ((D <= 4 and K >= 256) or K >= 1024)


def _polar_mass(tess: VoronoiTessellation, k: int, theta: float, n_phi: int, n_a: int) -> float:
    """Mass over cell k of N(0, I_2) pushed through f_k: in polar coordinates about a_k with
    y = a_k + alpha lam*(phi) (cos phi, sin phi), dy = lam*^2 alpha dalpha dphi; Gauss-Legendre
    in u with alpha = 1 - (1 - u)^4 (nodes packed at the face, where the density vanishes
    like exp(-c / (1 - alpha)^2)), midpoint rule in phi (piecewise smooth: kinks at the
    vertices)."""
    u, w = np.polynomial.legendre.leggauss(n_a)
    u, w = torch.tensor((u + 1) / 2, dtype=F64), torch.tensor(w / 2, dtype=F64)
    alpha, dalpha = 1 - (1 - u) ** 4, 4 * (1 - u) ** 3 * w
    phi = (torch.arange(n_phi, dtype=F64) + 0.5) * 2 * np.pi / n_phi
    d = torch.stack([phi.cos(), phi.sin()], -1)
    kk = torch.full((n_phi,), k)
    a, lo, hi = tess.anchors, tess.lower, tess.upper
    lam = ray_length(d, kk, a, lo, hi)
    y = a[k] + (alpha[None, :, None] * lam[:, None, None]) * d[:, None, :]
    x, ld = cell_map_inverse(y.reshape(-1, 2), kk.repeat_interleave(n_a), a, lo, hi, theta)
    dens = (-0.5 * x.square().sum(-1) - np.log(2 * np.pi) + ld).exp().reshape(n_phi, n_a)
    inner = (dens * lam[:, None] ** 2 * alpha[None] * dalpha[None]).sum(1)
    return float(inner.sum()) * 2 * np.pi / n_phi


@pytest.mark.parametrize("theta", [-1.0, 0.0, 1.5])
def test_pushed_forward_normal_has_mass_one_in_its_cell(theta) -> None:
    """The density of N(0, I) pushed through f_k, log N(f_k^-1(y)) + log |det df_k^-1/dy|,
    integrates to 1 over cell k, including the shell at the faces (float64 polar quadrature;
    measured error < 1e-12 at 1000 x 120 nodes; a log-det off by (D + 1) log(1 + t) / 100,
    or a ray cast that missed one face, moves it by > 1e-3)."""
    tess = _tess((), 6, 2, seed=21)
    with torch.no_grad():
        for k in range(6):
            assert abs(_polar_mass(tess, k, theta, 1000, 120) - 1.0) < 1e-9


def test_density_at_faces_vanishes_like_exp_minus_c_over_gap_squared() -> None:
    """Near a face, 1 - alpha = g -> 0: |x| = e^-theta |v| / g, so the pushed-forward
    normal's log-density is exactly -e^(-2 theta) |v|^2 / (2 g^2) - log(2 pi) - 2 theta
    - 3 log g. It stays finite (no overflow, no NaN) in float32 too down to g = 1e-5, where
    it differs from float64 only by the rounding of y (relative ~ 2 eps |y| / (g lam*)). At
    the anchor (r -> 0) the log-det is 2 theta - 3 log(1 + t) -> 2 theta."""
    tess = _tess((), 6, 2, seed=21)
    theta = 0.4
    d = torch.tensor([[0.6, 0.8], [-1.0, 0.2], [0.1, -1.0]], dtype=F64)
    d = d / d.norm(dim=-1, keepdim=True)
    k = torch.tensor([0, 3, 5])
    with torch.no_grad():
        a, lo, hi = tess.anchors, tess.lower, tess.upper
        lam = ray_length(d, k, a, lo, hi)
        for g in (1e-2, 1e-3, 1e-4, 1e-5):
            v = ((1 - g) * lam)[:, None] * d
            lp = {}
            for dt in (F64, torch.float32):
                x, ld = cell_map_inverse(
                    (a[k] + v).to(dt), k, a.to(dt), lo.to(dt), hi.to(dt), theta
                )
                lp[dt] = -0.5 * x.double().square().sum(-1) - np.log(2 * np.pi) + ld.double()
                assert torch.isfinite(lp[dt]).all()
            lead = -np.exp(-2 * theta) * v.square().sum(-1) / (2 * g * g)
            rest = -np.log(2 * np.pi) - 2 * theta - 3 * np.log(g)
            torch.testing.assert_close(lp[F64], lead + rest, rtol=1e-9, atol=0)
            # float32 rounds y by ~eps |y|: g moves by ~eps |y| / lam*, log p by 2 dg / g
            eps32 = torch.finfo(torch.float32).eps
            tol = 8 * eps32 * (a[k] + v).abs().amax(-1).clamp_min(1) / (g * lam)
            assert (((lp[torch.float32] - lp[F64]) / lp[F64]).abs() < tol).all()
        at = a[k] + 1e-300 * d
        _, ld0 = cell_map_inverse(at, k, a, lo, hi, theta)
        torch.testing.assert_close(ld0, torch.full_like(ld0, -2 * theta), rtol=0, atol=1e-12)


def test_public_functions_check_their_arguments() -> None:
    """The functional API (cell_map, cell_map_inverse, ray_length, nearest_anchor) names a bad
    cell index, a wrong D or unbroadcastable indices instead of an IndexError/RuntimeError;
    the box error says where the box is."""
    tess = _tess((), 4, 2, seed=61)
    a, lo, hi = tess.anchors, tess.lower, tess.upper
    x = torch.zeros(3, 2, dtype=F64)
    for fn in (cell_map, cell_map_inverse, ray_length):
        with pytest.raises(
            FlowfieldsError, match=r"k: got 'indices in \[0, 9\]', expected in 0..3"
        ):
            fn(x + 0.1, torch.tensor([0, 1, 9]), a, lo, hi)
        with pytest.raises(FlowfieldsError, match=r"shape \(\.\.\., 2\)"):
            fn(torch.zeros(3, 3, dtype=F64), torch.tensor([0, 1, 2]), a, lo, hi)
        with pytest.raises(FlowfieldsError, match="broadcastable"):
            fn(x + 0.1, torch.tensor([0, 1]), a, lo, hi)
    with pytest.raises(FlowfieldsError, match=r"y: .*shape \(\.\.\., 2\)"):
        nearest_anchor(torch.zeros(3, 3, dtype=F64), a)
    with pytest.raises(FlowfieldsError, match=r"lower \[-1.0, -1.0\], upper \[1.0, 1.0\].*1 of 2"):
        VoronoiTessellation(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    # still valid: a scalar k broadcasts against the points
    y, _ = cell_map(x + 0.1, torch.tensor(1), a, lo, hi)
    assert torch.equal(nearest_anchor(y, a), torch.ones(3, dtype=torch.long))
