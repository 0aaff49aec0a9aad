"""Voronoi mixture: exact normalisation (quadrature), component masses = pi_k, one component
per likelihood, log-det against autograd, the naive mixture baseline, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.voronoi import (
    FlowMixture,
    VoronoiMixture,
    VoronoiMixtureFlow,
    VoronoiTessellation,
    make_flow,
    polar_component_masses,
)

F64 = torch.float64
ANCHORS = [[-1.0, -1.0], [1.0, -0.5], [0.3, 1.2], [-0.8, 0.9], [0.1, 0.0]]


def _mixture(context: int = 3) -> VoronoiMixture:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tess = VoronoiTessellation(torch.tensor(ANCHORS, dtype=F64), -2.0, 2.0)
        m = VoronoiMixture(tess, context=context, flow=make_flow(2, context, hidden=(16, 16)))
        m = m.double()
        with torch.no_grad():
            m.logits.copy_(torch.tensor([0.5, -0.3, 1.0, 0.0, -1.0]))
            m.theta.copy_(torch.tensor([0.3, -0.5, 0.0, 1.0, -0.2]))
    return m


def _grid(n: int, box: float = 2.0) -> tuple[torch.Tensor, float]:
    h = 2 * box / n
    c = -box + h * (torch.arange(n, dtype=F64) + 0.5)
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2), h * h


@pytest.mark.parametrize("context", [0, 3])
def test_density_integrates_to_one_and_components_to_pi(context) -> None:
    """Midpoint rule, 400^2 cells on the box: the jumps across the cell faces make the rule
    first order, error ~ h x face length x jump (measured 2e-5 at this size, 1e-4 at 200^2);
    a log-det off by even 1% of its value moves the masses by ~1e-2."""
    m = _mixture(context)
    pts, area = _grid(400)
    with torch.no_grad():
        lp = m.log_prob(pts)
        k = m.tess.nearest(pts)
        pi = m.log_pi().exp()
    mass = lp.exp() * area
    assert abs(float(mass.sum()) - 1.0) < 2e-4
    per = torch.zeros(5, dtype=F64).index_add_(0, k, mass)
    torch.testing.assert_close(per, pi, rtol=0, atol=2e-4)
    # outside the box the density is zero
    out = torch.tensor([[2.5, 0.0], [0.0, -2.01]], dtype=F64)
    assert torch.isneginf(m.log_prob(out)).all()


def test_polar_component_masses_are_one_and_catch_a_wrong_log_det(monkeypatch) -> None:
    """Each component's mass over its own cell by float64 polar quadrature: 1 to 1e-4 at
    600 x 400 nodes (measured 2.9e-5; 5.5e-4 at 600 x 120, 1.9e-4 at 4000 x 200: the radial
    nodes matter); with the inverse map's log-det off by 0.01 nats it reads e^0.01."""
    import flowfields.voronoi.mixture as vm

    m = _mixture(3).float()  # the helper evaluates a float64 copy
    masses = polar_component_masses(m, 600, 400)
    assert masses.dtype == F64 and masses.shape == (5,)
    torch.testing.assert_close(masses, torch.ones(5, dtype=F64), rtol=0, atol=1e-4)
    assert m.logits.dtype == torch.float32  # the mixture itself is unchanged
    exact = vm.cell_map_inverse

    def off(*args, **kwargs):
        x, ld = exact(*args, **kwargs)
        return x, ld + 0.01

    monkeypatch.setattr(vm, "cell_map_inverse", off)
    wrong = polar_component_masses(m, 600, 400)
    torch.testing.assert_close(
        wrong, torch.full((5,), math.exp(0.01), dtype=F64), atol=2e-4, rtol=0
    )
    with pytest.raises(FlowfieldsError, match="n_phi"):
        polar_component_masses(m, 0, 10)


def test_log_prob_is_one_component_and_matches_autograd_jacobian() -> None:
    m = _mixture()
    y = m.sample(50, generator=torch.Generator().manual_seed(1)).detach()
    lp = m.log_prob(y)
    k = m.tess.nearest(y)
    for j in range(5):
        own = k == j
        comp = m.component_log_prob(y, j)
        torch.testing.assert_close(lp[own], comp[own] + m.log_pi()[j])
        assert torch.isneginf(comp[~own]).all()
    # log p(y) = log pi_k + log p(x | k) + log |det dx/dy| with the Jacobian by autograd
    a, lo, hi = m.tess.anchors, m.tess.lower, m.tess.upper
    from flowfields.voronoi import cell_map_inverse

    for i in range(6):
        ki = k[i : i + 1]

        def inv(yi, ki=ki):
            return cell_map_inverse(yi[None], ki, a, lo, hi, m.theta[ki])[0][0]

        jac = torch.autograd.functional.jacobian(inv, y[i])
        x = inv(y[i])
        ref = (
            m.log_pi()[ki]
            + m.flow(m.embedding[ki]).log_prob(x[None])
            + torch.linalg.slogdet(jac)[1]
        )
        torch.testing.assert_close(lp[i : i + 1], ref, rtol=1e-10, atol=1e-10)


def test_samples_lie_in_their_cells_and_gradients_are_finite_at_anchors() -> None:
    m = _mixture()
    g = torch.Generator().manual_seed(2)
    y = m.sample(2000, generator=g)
    assert m.tess.in_box(y).all()
    counts = torch.bincount(m.tess.nearest(y), minlength=5).double() / 2000
    pi = m.log_pi().exp().detach()
    assert ((counts - pi).abs() <= 4 * (pi * (1 - pi) / 2000).sqrt()).all()
    at = m.tess.anchors.detach().clone()
    lp = m.log_prob(at)
    assert torch.isfinite(lp).all()
    (-lp.sum()).backward()
    for name, p in m.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_flow_mixture_is_the_explicit_sum() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        fm = FlowMixture(2, 4, context=3, flow=make_flow(2, 3, hidden=(8,))).double()
    y = torch.randn(7, 2, dtype=F64)
    ref = torch.logsumexp(
        torch.stack([fm.flow(fm.embedding[j].expand(7, 3)).log_prob(y) for j in range(4)], 1)
        + torch.log_softmax(fm.logits, 0),
        1,
    )
    torch.testing.assert_close(fm.log_prob(y), ref)


def test_bad_input_raises() -> None:
    m = _mixture()
    with pytest.raises(FlowfieldsError, match="y"):
        m.log_prob(torch.zeros(3, 3, dtype=F64))
    with pytest.raises(FlowfieldsError, match="y"):
        m.log_prob(torch.zeros(3, 2, dtype=torch.float32))
    with pytest.raises(FlowfieldsError, match="k"):
        m.component_log_prob(torch.zeros(3, 2, dtype=F64), 5)
    with pytest.raises(FlowfieldsError, match="tessellation"):
        VoronoiMixture(VoronoiTessellation(torch.zeros(2, 2, 2) + torch.tensor([0.1, -0.1])))
    with pytest.raises(FlowfieldsError, match="n_components"):
        FlowMixture(2, 1)


def _stack() -> VoronoiMixtureFlow:
    with torch.random.fork_rng():
        torch.manual_seed(1)
        tess = VoronoiTessellation(torch.tensor(ANCHORS, dtype=F64) / 2.5, -1.0, 1.0)
        mix = VoronoiMixture(tess, context=3, flow=make_flow(2, 3, transforms=1, hidden=(16,)))
        m = VoronoiMixtureFlow(mix, make_flow(2, 0, transforms=1, hidden=(16,))).double()
        with torch.no_grad():
            mix.logits.copy_(torch.tensor([0.5, -0.3, 1.0, 0.0, -1.0]))
    return m


def test_stack_integrates_to_one_on_the_plane_and_samples_match() -> None:
    """The flow + sigmoid + Voronoi layer is a density on R^2: midpoint rule on [-6, 6]^2
    (measured: 0.99994 at 800^2 cells, 1.00001 at 1600^2; [-12, 12]^2 at the same spacing
    agrees to 1e-15, so the tails are negligible; 1.018 at 200 cells per 12: a log-det error
    of 1% would show), and its samples land in the cells with the frequencies pi_k (4
    binomial SE)."""
    m = _stack()
    n, L = 800, 6.0
    c = -L + 2 * L * (torch.arange(n, dtype=F64) + 0.5) / n
    pts = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = sum(float(m.log_prob(p).exp().sum()) for p in pts.split(100_000)) * (2 * L / n) ** 2
        assert abs(mass - 1.0) < 3e-4
        y = m.sample(20_000, generator=torch.Generator().manual_seed(0))
        k = m.mixture.tess.nearest(m.to_box(y))
        pi = m.mixture.log_pi().exp()
    freq = torch.bincount(k, minlength=5).double() / y.shape[0]
    assert ((freq - pi).abs() <= 4 * (pi * (1 - pi) / y.shape[0]).sqrt()).all()


def test_stack_kmeans_anchors_and_gradients() -> None:
    m = _stack()
    data = torch.randn(500, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    m.init_anchors(data, generator=torch.Generator().manual_seed(0))
    a = m.mixture.tess.anchors.detach()
    b = m.to_box(data).detach()
    from flowfields.linalg import kmeans

    ref = kmeans(b, 5, generator=torch.Generator().manual_seed(0), init="k-means++").centres
    torch.testing.assert_close(a, ref, rtol=0, atol=1e-6)
    (-m.log_prob(data).mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(FlowfieldsError, match="mixture"):
        VoronoiMixtureFlow(make_flow(2))  # type: ignore[arg-type]


# ---------------------------------------------------------------- Student-t base in the cells
def _identity_flow(D: int = 2):
    """A zuko flow whose transform is the identity (the cell density is the bare base)."""
    import zuko

    ident = zuko.flows.UnconditionalTransform(
        torch.distributions.transforms.IndependentTransform,
        torch.distributions.transforms.identity_transform,
        1,
    )
    base = zuko.flows.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(D), torch.ones(D), buffer=True
    )
    return zuko.flows.Flow(ident, base)


THETA = [0.3, -0.5, 0.0, 1.0, -0.2]


def _t_mixture(df: float, *, bare: bool = False, learn_df: bool = False) -> VoronoiMixture:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tess = VoronoiTessellation(torch.tensor(ANCHORS, dtype=F64), -2.0, 2.0)
        ctx = 0 if bare else 3
        flow = _identity_flow() if bare else make_flow(2, 3, hidden=(16, 16))
        m = VoronoiMixture(
            tess, context=ctx, flow=flow, base="student", df=df, learn_df=learn_df
        ).double()
        with torch.no_grad():
            m.logits.copy_(torch.tensor([0.5, -0.3, 1.0, 0.0, -1.0]))
            m.theta.copy_(torch.tensor(THETA))
    return m


@pytest.mark.parametrize("df", [0.5, 1.0, 2.5, 5.0])
def test_multivariate_t_log_prob_matches_scipy(df) -> None:
    from scipy.stats import multivariate_t

    from flowfields.voronoi import multivariate_t_log_prob

    g = torch.Generator().manual_seed(3)
    for D in (1, 2, 5):
        z = 4 * torch.randn(40, D, generator=g, dtype=F64)
        z[0] = 0.0
        z[1] = 1e6  # deep in the tail
        ref = multivariate_t(loc=np.zeros(D), shape=np.eye(D), df=df).logpdf(z.numpy())
        got = multivariate_t_log_prob(z, df)
        np.testing.assert_allclose(got.numpy(), np.atleast_1d(ref), rtol=1e-12, atol=1e-10)


def test_student_mixture_log_prob_is_the_exact_formula() -> None:
    """log p(y) = log pi_k + log |det dx/dy| + log t_nu(T(x)) + log |det dT/dx| with scipy's
    multivariate t, for the bare base (T = id) and for the NSF in the cells; 1e-10."""
    from scipy.stats import multivariate_t

    from flowfields.voronoi import cell_map_inverse

    y = torch.rand(300, 2, generator=torch.Generator().manual_seed(5), dtype=F64) * 4 - 2
    for bare in (True, False):
        m = _t_mixture(2.5, bare=bare)
        t = m.tess
        with torch.no_grad():
            k = t.nearest(y)
            x, ld = cell_map_inverse(y, k, t.anchors, t.lower, t.upper, m.theta[k])
            dist = m._dist(k)
            z, ladj = dist.transform.call_and_ladj(x)
            ref = (
                m.log_pi()[k]
                + ld
                + ladj
                + torch.tensor(multivariate_t(np.zeros(2), np.eye(2), df=2.5).logpdf(z.numpy()))
            )
            torch.testing.assert_close(m.log_prob(y), ref, rtol=1e-10, atol=1e-10)
            if bare:
                torch.testing.assert_close(z, x, rtol=0, atol=0)


@pytest.mark.parametrize("df", [1.0, 3.0])
def test_pushed_forward_student_t_has_mass_one_in_its_cell(df) -> None:
    """polar_component_masses of the bare multivariate-t base pushed through each cell map:
    1 to 1e-10 (measured < 1e-14 at 1000 x 120 nodes for df 1 and 3: the radial integrand,
    ~ g^(df - 1) at the face, is a polynomial in u there). With the NSF in the cells, 1 to
    2e-4 (measured 8.7e-5 / 3.1e-5 for df 1 / 3 at 400 x 300, 2.6e-4 / 1.9e-4 at 300 x 200;
    the flow's kinks limit the midpoint rule in phi, as with the normal base). A
    log-det off by 0.01 nats reads e^0.01."""
    import flowfields.voronoi.mixture as vm

    masses = polar_component_masses(_t_mixture(df, bare=True), 1000, 120)
    torch.testing.assert_close(masses, torch.ones(5, dtype=F64), rtol=0, atol=1e-10)
    masses = polar_component_masses(_t_mixture(df), 400, 300)
    torch.testing.assert_close(masses, torch.ones(5, dtype=F64), rtol=0, atol=2e-4)
    exact = vm.multivariate_t_log_prob

    def off(z, nu):
        return exact(z, nu) + 0.01

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vm, "multivariate_t_log_prob", off)
        wrong = polar_component_masses(_t_mixture(df, bare=True), 1000, 120)
    torch.testing.assert_close(wrong, torch.full((5,), math.exp(0.01), dtype=F64))


@pytest.mark.parametrize("df", [0.5, 1.0, 3.0])
def test_student_cell_density_at_the_faces_is_polynomial_in_the_gap(df) -> None:
    """At g = 1 - alpha -> 0 along a ray, |x| = e^-theta |v| / g and log |det dx/dy| =
    -D theta - (D + 1) log g, so with the t tail |x|^-(nu + D) the cell density is
    ~ C g^(nu - 1):

        log p(y) - (nu - 1) log g -> log pi_k - D theta + lgamma((nu + D) / 2)
            - lgamma(nu / 2) - (D / 2) log(nu pi) + ((nu + D) / 2) log nu
            - (nu + D) log(e^-theta lam*),

    with an O(g) error (|v| = (1 - g) lam*; the slope between g = 1e-3 and 1e-4 is off by
    1.2e-3 for nu = 1, 3 log(1 - g) over log 10). Checked for the bare base and, through the
    slope d log p / d log g -> nu - 1, for the NSF (identity in its tails)."""
    from math import lgamma, log, pi

    from flowfields.voronoi import ray_length

    D, nu = 2, df
    d = torch.tensor([[0.6, 0.8], [-1.0, 0.2], [0.1, -1.0]], dtype=F64)
    d = d / d.norm(dim=-1, keepdim=True)
    k = torch.tensor([0, 3, 2])
    for bare in (True, False):
        m = _t_mixture(df, bare=bare)
        a, lo, hi = m.tess.anchors, m.tess.lower, m.tess.upper
        lam = ray_length(d, k, a, lo, hi)
        th = torch.tensor(THETA, dtype=F64)[k]
        with torch.no_grad():
            lim = (
                m.log_pi()[k]
                - D * th
                + lgamma((nu + D) / 2)
                - lgamma(nu / 2)
                - (D / 2) * log(nu * pi)
                + ((nu + D) / 2) * log(nu)
                - (nu + D) * torch.log((-th).exp() * lam)
            )
            prev = None
            for g in (1e-4, 1e-5, 1e-6, 1e-7):
                y = a[k] + ((1 - g) * lam)[:, None] * d
                lp = m.log_prob(y)
                assert torch.isfinite(lp).all()
                if bare:
                    err = (lp - (nu - 1) * log(g) - lim).abs()
                    assert (err < 20 * g).all(), (g, err)
                if prev is not None:
                    slope = (lp - prev) / log(10)  # g went down by 10
                    assert ((slope + (nu - 1)).abs() < 1e-3).all(), (g, slope)
                prev = lp
        # the normal base at the same points: -c / g^2, far below
        if bare:
            m.base = "normal"
            with torch.no_grad():
                y = a[k] + ((1 - 1e-3) * lam)[:, None] * d
                assert (m.log_prob(y) < -1e4).all()


def test_student_samples_are_t_and_df_is_learnable() -> None:
    """Bare base: the inverse-mapped samples x = f_k^-1(y) are multivariate t, so
    |x|^2 / D ~ F(D, nu) (KS test, 4000 samples, seed fixed, p > 1e-3); the same generator
    seed gives the same samples; log nu gets a finite gradient."""
    from scipy.stats import f as fisher
    from scipy.stats import kstest

    from flowfields.voronoi import cell_map_inverse

    m = _t_mixture(3.0, bare=True, learn_df=True)
    y = m.sample(4000, generator=torch.Generator().manual_seed(7)).detach()
    again = m.sample(4000, generator=torch.Generator().manual_seed(7)).detach()
    assert torch.equal(y, again)
    t = m.tess
    k = t.nearest(y)
    with torch.no_grad():
        x, _ = cell_map_inverse(y, k, t.anchors, t.lower, t.upper, m.theta[k])
    stat = (x.square().sum(-1) / 2).numpy()
    assert kstest(stat, fisher(2, 3.0).cdf).pvalue > 1e-3
    assert kstest(stat, fisher(2, 1.5).cdf).pvalue < 1e-6  # a wrong nu is rejected
    assert isinstance(m.log_df, torch.nn.Parameter)
    (-m.log_prob(y[:200]).mean()).backward()
    assert m.log_df.grad is not None and torch.isfinite(m.log_df.grad)
    # a fixed df is a buffer (saved, not trained)
    fixed = _t_mixture(3.0, bare=True)
    assert "log_df" in dict(fixed.named_buffers())
    assert "log_df" not in dict(fixed.named_parameters())


def test_bad_base_and_df_raise() -> None:
    tess = VoronoiTessellation(torch.tensor(ANCHORS), -2.0, 2.0)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "2", True, None):
        with pytest.raises(FlowfieldsError, match="df"):
            VoronoiMixture(tess, base="student", df=bad)  # type: ignore[arg-type]
    with pytest.raises(FlowfieldsError, match="base"):
        VoronoiMixture(tess, base="cauchy")
    with pytest.raises(FlowfieldsError, match="learn_df"):
        VoronoiMixture(tess, base="normal", learn_df=True)
    from flowfields.voronoi import multivariate_t_log_prob

    for bad in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(FlowfieldsError, match="df"):
            multivariate_t_log_prob(torch.zeros(3, 2), bad)
    with pytest.raises(FlowfieldsError, match="z"):
        multivariate_t_log_prob(torch.tensor(1.0), 1.0)


def test_init_anchors_checks_its_data() -> None:
    from flowfields.voronoi import VoronoiMixtureFlow, make_flow

    tess = VoronoiTessellation(torch.tensor(ANCHORS), -2.0, 2.0)
    stack = VoronoiMixtureFlow(VoronoiMixture(tess, context=2), make_flow(2, transforms=1))
    K = tess.n_cells
    with pytest.raises(FlowfieldsError, match=f"at least K = {K}"):
        stack.init_anchors(torch.randn(K - 1, 2))
    with pytest.raises(FlowfieldsError, match="data"):
        stack.init_anchors(torch.randn(50, 3))
    with pytest.raises(FlowfieldsError, match="data"):
        stack.init_anchors(torch.full((50, 2), float("nan")))
