"""Voronoi mixture: exact normalisation (quadrature), component masses = pi_k, one component
per likelihood, log-det against autograd, the naive mixture baseline, errors."""

from __future__ import annotations

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.voronoi import FlowMixture, VoronoiMixture, VoronoiTessellation, make_flow

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
