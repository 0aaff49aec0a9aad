"""Gaussian conditional paths (Flow Matching, arXiv:2210.02747, Sec. 4).

Closed forms (eqs. 17-22), forward-mode derivatives (torch.func.jvp) in float64, and seeded
statistical tests of the marginals. Each statistical check uses a tolerance of 5 standard
errors (two-sided false-alarm rate about 6e-7 per check under the normal approximation).
"""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from torch.func import jvp

from flowfields.errors import FlowfieldsError
from flowfields.paths import (
    PATHS,
    CondOTPath,
    GaussianPath,
    PathSample,
    VEPath,
    VPPath,
    get_path,
)

F64 = torch.float64


def _batch(n: int = 64, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x_1 = 2.0 * torch.randn(n, d, generator=g, dtype=F64) + 0.5
    x_0 = torch.randn(n, d, generator=g, dtype=F64)
    return x_0, x_1


def _times(path: GaussianPath, n: int, seed: int = 1) -> torch.Tensor:
    return path.sample_t(n, torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name", PATHS)
def test_u_t_is_time_derivative_of_flow(name: str) -> None:
    path = get_path(name)
    x_0, x_1 = _batch()
    t = _times(path, x_0.shape[0])
    s = path.sample(x_0, x_1, t)
    _, d_psi = jvp(lambda tt: path.flow(x_0, x_1, tt), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(s.u_t, d_psi, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.x_t, path.flow(x_0, x_1, t), rtol=0, atol=0)


@pytest.mark.parametrize("name", PATHS)
def test_theorem_3_formula_equals_flow_derivative(name: str) -> None:
    path = get_path(name)
    x_0, x_1 = _batch(seed=2)
    t = _times(path, x_0.shape[0], seed=3)
    s = path.sample(x_0, x_1, t)
    # Theorem 3 from mean_std and its derivative, independent of target()'s code path
    mu, sigma = path.mean_std(t, x_1)
    d_mu, d_sigma = path.mean_std_derivative(t, x_1)
    thm3 = d_sigma / sigma * (s.x_t - mu) + d_mu
    torch.testing.assert_close(thm3, s.u_t, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(path.target(s.x_t, x_1, t), s.u_t, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", PATHS)
def test_mean_std_derivative_by_jvp(name: str) -> None:
    path = get_path(name)
    _, x_1 = _batch(seed=4)
    t = _times(path, x_1.shape[0], seed=5)
    (_, _), (d_mu, d_sigma) = jvp(lambda tt: path.mean_std(tt, x_1), (t,), (torch.ones_like(t),))
    mu_dot, sigma_dot = path.mean_std_derivative(t, x_1)
    torch.testing.assert_close(mu_dot, d_mu, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sigma_dot, d_sigma, rtol=1e-12, atol=1e-12)


def test_condot_closed_forms_eqs_20_to_22() -> None:
    sigma_min = 0.05
    path = CondOTPath(sigma_min)
    x_0, x_1 = _batch(seed=6)
    t = _times(path, x_0.shape[0])[:, None]
    s = path.sample(x_0, x_1, t[:, 0])
    psi = (1 - (1 - sigma_min) * t) * x_0 + t * x_1  # eq. 22
    u = (x_1 - (1 - sigma_min) * s.x_t) / (1 - (1 - sigma_min) * t)  # eq. 21
    torch.testing.assert_close(s.x_t, psi, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(s.u_t, u, rtol=1e-10, atol=1e-10)


def test_vp_closed_forms_eqs_18_19() -> None:
    bmin, bmax = 0.1, 20.0
    path = VPPath(bmin, bmax)
    x_0, x_1 = _batch(seed=7)
    t = _times(path, x_0.shape[0])
    s = 1 - t
    big_t = bmin * s + 0.5 * (bmax - bmin) * s**2
    alpha = torch.exp(-0.5 * big_t)[:, None]
    # alpha'_{1-t}: derivative of alpha_s w.r.t. s, at s = 1 - t
    d_alpha_ds = (-0.5 * (bmin + s * (bmax - bmin)))[:, None] * alpha
    mu, sigma = path.mean_std(t, x_1)
    torch.testing.assert_close(mu, alpha * x_1, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(sigma, torch.sqrt(1 - alpha**2), rtol=1e-12, atol=1e-14)
    x_t = path.sample(x_0, x_1, t).x_t
    u = d_alpha_ds / (1 - alpha**2) * (alpha * x_t - x_1)  # eq. 19
    torch.testing.assert_close(path.target(x_t, x_1, t), u, rtol=1e-9, atol=1e-9)


def test_ve_closed_forms_eq_17() -> None:
    path = VEPath(sigma_min=0.02, sigma_max=7.0)
    x_0, x_1 = _batch(seed=8)
    t = _times(path, x_0.shape[0])
    sigma = 0.02 * (7.0 / 0.02) ** (1 - t)
    mu, sig = path.mean_std(t, x_1)
    torch.testing.assert_close(mu, x_1, rtol=0, atol=0)
    torch.testing.assert_close(sig[:, 0], sigma, rtol=1e-13, atol=0)
    x_t = path.sample(x_0, x_1, t).x_t
    u = -math.log(7.0 / 0.02) * (x_t - x_1)  # -sigma'_{1-t}/sigma_{1-t} (x - x_1)
    torch.testing.assert_close(path.target(x_t, x_1, t), u, rtol=1e-10, atol=1e-10)


def test_endpoint_schedules() -> None:
    ot = CondOTPath(1e-4).schedule(torch.tensor([0.0, 1.0], dtype=F64))
    assert ot.alpha_t.tolist() == [0.0, 1.0] and ot.sigma_t[0] == 1.0
    assert abs(float(ot.sigma_t[1]) - 1e-4) < 1e-15
    vp = VPPath()
    s0 = vp.schedule(torch.tensor([0.0], dtype=F64))
    # t = 0: alpha = exp(-(0.1 + 20) / 4) = 6.6e-3 (approximately noise), sigma^2 = 1 - alpha^2
    assert abs(float(s0.alpha_t) - math.exp(-20.1 / 4)) < 1e-15
    assert float(s0.alpha_t) < 7e-3 and abs(float(s0.sigma_t) ** 2 - 1) < 5e-5
    # near t = 1, float64 with expm1: sigma^2 = 1 - exp(-T(1e-5)) to full relative accuracy
    s1 = vp.schedule(torch.tensor([vp.t_max], dtype=F64))
    big_t = 0.1 * 1e-5 + 0.5 * 19.9 * 1e-10
    assert abs(float(s1.sigma_t) ** 2 / -math.expm1(-big_t) - 1) < 1e-9
    ve = VEPath(0.01, 10.0).schedule(torch.tensor([0.0, 1.0], dtype=F64))
    torch.testing.assert_close(ve.sigma_t, torch.tensor([10.0, 0.01], dtype=F64))


def test_vp_float32_stays_finite_near_one() -> None:
    path = VPPath()
    x_0, x_1 = (v.float() for v in _batch(seed=9))
    t = torch.full((x_0.shape[0],), path.t_max, dtype=torch.float32)
    s = path.sample(x_0, x_1, t)
    assert s.u_t.dtype == torch.float32 and bool(torch.isfinite(s.u_t).all())


@pytest.mark.parametrize("name", ["condot", "vp"])
def test_t0_marginal_is_standard_normal(name: str) -> None:
    path = get_path(name)
    n, d = 40_000, 2
    g = torch.Generator().manual_seed(10)
    x_1 = 3.0 * torch.rand(n, d, generator=g, dtype=F64) + 1.0  # data far from 0
    x_0 = torch.randn(n, d, generator=g, dtype=F64)
    x_t = path.sample(x_0, x_1, torch.zeros(n, dtype=F64)).x_t
    se = 1 / math.sqrt(n)
    assert x_t.mean(0).abs().max() < 5 * se + 0.02  # VP: alpha_0 * E[x_1] = 0.0066 * 2.5
    assert (x_t.var(0) - 1).abs().max() < 5 * math.sqrt(2 / n)
    if name == "condot":
        torch.testing.assert_close(x_t, x_0, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "std"), [("condot", 1e-4), ("ve", 0.01), ("vp", None)])
def test_t1_concentrates_at_x1(name: str, std: float | None) -> None:
    path = get_path(name)
    n, d = 20_000, 2
    x_0, x_1 = _batch(n, d, seed=11)
    t = torch.full((n,), path.t_max, dtype=F64)
    dev = path.sample(x_0, x_1, t).x_t - x_1
    if std is None:  # VP at t = 1 - 1e-5: sigma = sqrt(1 - exp(-T(1e-5))) ~ 1e-3, mean alpha ~ 1
        std = math.sqrt(-math.expm1(-(0.1 * 1e-5 + 0.5 * 19.9 * 1e-10)))
        dev = dev - (path.schedule(t[:1]).alpha_t - 1) * x_1
    assert abs(float(dev.std()) / std - 1) < 5 * math.sqrt(1 / (2 * n * d))
    assert float(dev.mean().abs()) < 5 * std / math.sqrt(n * d)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("t_value", [0.1, 0.5, 0.9])
def test_marginal_of_gaussian_data(name: str, t_value: float) -> None:
    # x_1 ~ N(m, s^2 I) => x_t ~ N(alpha_t m, (sigma_t^2 + alpha_t^2 s^2) I)
    path = get_path(name)
    n, d, m, s = 50_000, 2, 1.5, 0.7
    g = torch.Generator().manual_seed(12)
    x_1 = m + s * torch.randn(n, d, generator=g, dtype=F64)
    x_0 = torch.randn(n, d, generator=g, dtype=F64)
    x_t = path.sample(x_0, x_1, torch.full((n,), t_value, dtype=F64)).x_t
    sch = path.schedule(torch.tensor(t_value, dtype=F64))
    mean = float(sch.alpha_t) * m
    var = float(sch.sigma_t) ** 2 + float(sch.alpha_t) ** 2 * s**2
    assert (x_t.mean(0) - mean).abs().max() < 5 * math.sqrt(var / n)
    assert ((x_t.var(0) - var) / var).abs().max() < 5 * math.sqrt(2 / n)
    # and the full marginal law: Kolmogorov-Smirnov against the closed-form normal
    p = scipy.stats.kstest(x_t[:, 0].numpy(), "norm", args=(mean, math.sqrt(var))).pvalue
    assert p > 1e-4


@pytest.mark.parametrize("name", PATHS)
def test_sample_t_range_and_uniformity(name: str) -> None:
    path = get_path(name)
    t = path.sample_t(20_000, torch.Generator().manual_seed(13), dtype=F64)
    assert t.shape == (20_000,) and float(t.min()) >= path.t_min and float(t.max()) <= path.t_max
    p = scipy.stats.kstest(t.numpy(), "uniform", args=(path.t_min, path.t_max - path.t_min))
    assert p.pvalue > 1e-4
    again = path.sample_t(20_000, torch.Generator().manual_seed(13), dtype=F64)
    torch.testing.assert_close(t, again, rtol=0, atol=0)
    assert path.sample_t(5).dtype == torch.get_default_dtype()


def test_vp_t_max() -> None:
    assert VPPath().t_max == 1 - 1e-5 and VPPath(eps=1e-3).t_max == 1 - 1e-3


@pytest.mark.parametrize("name", PATHS)
def test_scalar_time_broadcasts_and_images(name: str) -> None:
    path = get_path(name)
    g = torch.Generator().manual_seed(14)
    x_1 = torch.randn(4, 1, 5, 5, generator=g, dtype=F64)
    x_0 = torch.randn(4, 1, 5, 5, generator=g, dtype=F64)
    a = path.sample(x_0, x_1, 0.3)
    b = path.sample(x_0, x_1, torch.full((4,), 0.3, dtype=F64))
    assert isinstance(a, PathSample) and a.t.shape == (4,) and a.x_t.shape == x_1.shape
    torch.testing.assert_close(a.x_t, b.x_t, rtol=0, atol=0)
    torch.testing.assert_close(a.u_t, b.u_t, rtol=0, atol=0)
    # per-example times broadcast over trailing dims: example i only depends on t_i
    t = torch.tensor([0.1, 0.4, 0.6, 0.8], dtype=F64)
    c = path.sample(x_0, x_1, t)
    for i in range(4):
        ci = path.sample(x_0[i : i + 1], x_1[i : i + 1], t[i : i + 1])
        torch.testing.assert_close(c.u_t[i : i + 1], ci.u_t, rtol=0, atol=0)


def test_dtype_follows_data() -> None:
    x_0, x_1 = (v.float() for v in _batch(seed=15))
    s = CondOTPath().sample(x_0, x_1, torch.rand(x_0.shape[0]))
    assert s.x_t.dtype == s.u_t.dtype == s.t.dtype == torch.float32


def test_bad_input() -> None:
    x_0, x_1 = _batch(8, 2)
    path = CondOTPath()
    with pytest.raises(FlowfieldsError, match="name"):
        get_path("diffusion")
    with pytest.raises(FlowfieldsError, match=r"\[0, 1\]"):
        path.sample(x_0, x_1, torch.full((8,), 1.5, dtype=F64))
    with pytest.raises(FlowfieldsError, match=r"\[0, 1\]"):
        path.mean_std(-0.1, x_1)
    with pytest.raises(FlowfieldsError, match="x_0"):
        path.sample(x_0[:, :1], x_1, 0.5)
    with pytest.raises(FlowfieldsError, match="t"):
        path.sample(x_0, x_1, torch.rand(7, dtype=F64))
    with pytest.raises(FlowfieldsError, match="NaN"):
        path.sample(x_0, x_1, torch.full((8,), math.nan, dtype=F64))
    with pytest.raises(FlowfieldsError, match="t < 1"):
        VPPath().sample(x_0, x_1, torch.ones(8, dtype=F64))
    with pytest.raises(FlowfieldsError, match="sigma_min"):
        CondOTPath(sigma_min=1.0)
    with pytest.raises(FlowfieldsError, match="sigma_max"):
        VEPath(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(FlowfieldsError, match="beta_max"):
        VPPath(beta_min=1.0, beta_max=0.5)
    with pytest.raises(FlowfieldsError, match="keyword"):
        get_path("vp", sigma_min=0.1)
    with pytest.raises(FlowfieldsError, match="sigma_t = 0"):
        CondOTPath(0.0).target(x_0, x_1, 1.0)
    with pytest.raises(FlowfieldsError, match="x_1"):
        path.mean_std(0.5, torch.zeros(8, 2, dtype=torch.long))
    with pytest.raises(FlowfieldsError, match="n"):
        path.sample_t(-1)


@pytest.mark.parametrize("name", PATHS)
def test_sample_on_device(name: str, device: torch.device) -> None:
    path = get_path(name)
    x_1 = torch.randn(16, 2, device=device)
    x_0 = torch.randn(16, 2, device=device)
    t = path.sample_t(16, device=device)
    s = path.sample(x_0, x_1, t)
    assert t.device == s.t.device == s.x_t.device == s.u_t.device == x_1.device
    ref = path.sample(x_0.cpu().double(), x_1.cpu().double(), t.cpu().double())
    torch.testing.assert_close(s.u_t.cpu().double(), ref.u_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["condot", "vp"])
def test_matches_peer_library_paths(name: str) -> None:
    # external reference: Meta's flow_matching (dev dependency, used only as a reference)
    fm_path = pytest.importorskip("flow_matching.path")
    scheduler = pytest.importorskip("flow_matching.path.scheduler")
    if name == "condot":
        ours, peer = CondOTPath(sigma_min=0.0), fm_path.CondOTProbPath()
    else:
        ours, peer = VPPath(0.1, 20.0), fm_path.AffineProbPath(scheduler.VPScheduler(0.1, 20.0))
    x_0, x_1 = _batch(seed=16)
    t = _times(ours, x_0.shape[0], seed=17)
    a = ours.sample(x_0, x_1, t)
    b = peer.sample(x_0=x_0, x_1=x_1, t=t)
    torch.testing.assert_close(a.x_t, b.x_t, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a.u_t, b.dx_t, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("method", ["sample", "flow", "target"])
def test_non_finite_data_raises_naming_the_argument(name: str, method: str) -> None:
    path = get_path(name)
    x_0, x_1 = _batch(8, 2)
    t = torch.full((8,), 0.5, dtype=F64)
    call = getattr(path, method)
    for which, bad in (("x_0", math.nan), ("x_1", math.inf), ("x_1", -math.inf)):
        a, b = x_0.clone(), x_1.clone()
        (a if which == "x_0" else b)[3, 1] = bad
        first = "x" if method == "target" and which == "x_0" else which
        with pytest.raises(FlowfieldsError, match=rf"{first}: .*1 non-finite"):
            call(a, b, t)
    # finite data whose sum overflows is still accepted
    big = torch.full((8, 2), torch.finfo(F64).max, dtype=F64)
    out = path.sample(big, big, t)
    assert out.x_t.shape == (8, 2)
