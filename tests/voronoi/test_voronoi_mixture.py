"""Voronoi mixture: exact normalisation (quadrature), component masses = pi_k, one component
per likelihood, log-det against autograd, the naive mixture baseline, errors."""

from __future__ import annotations

import math

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
