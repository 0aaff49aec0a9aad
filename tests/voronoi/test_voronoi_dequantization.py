"""Dequantizers: decoding, exact log q (unbiased p/q vs quadrature), ELBO <= IWAE, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.voronoi import (
    ArgmaxDequantizer,
    DequantizedFlow,
    UniformDequantizer,
    VoronoiDequantizer,
    make_dequantizer,
    make_flow,
)

F64 = torch.float64


def _seeded(build, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


@pytest.mark.parametrize(
    "kind,N,K,D",
    [
        ("voronoi", 3, 5, 1),
        ("voronoi", 2, 17, 2),
        ("voronoi", 4, 6, 3),
        ("argmax", 3, 5, 0),
        ("argmax", 2, 17, 0),
        ("argmax", 1, 2, 0),
        ("uniform", 3, 7, 0),
    ],
)
def test_samples_decode_back_to_x(kind, N, K, D) -> None:
    deq = _seeded(lambda: make_dequantizer(kind, N, K, dim=max(D, 1), hidden=16))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, K, (200, N), generator=g)
    with torch.no_grad():
        z, log_q = deq.sample(x, 5, generator=g)
    assert z.shape == (5, 200, deq.features) and log_q.shape == (5, 200)
    assert torch.isfinite(log_q).all()
    assert torch.equal(deq.decode(z), x.expand(5, 200, N))
    if kind == "argmax":
        assert deq.dim == max(1, math.ceil(math.log2(K)))


def _grid(box: float, n: int) -> tuple[torch.Tensor, float]:
    h = 2 * box / n
    c = -box + h * (torch.arange(n, dtype=F64) + 0.5)
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2), h * h


def _region_mass(model: DequantizedFlow, box: float, n: int) -> tuple[torch.Tensor, float]:
    """P(x) = int_{region(x)} p(z) dz for every x of a 2-D z (midpoint rule over
    [-box, box]^2 with n cells per side), and the total mass of p in that box."""
    zz, area = _grid(box, n)
    deq = model.dequantizer
    with torch.no_grad():
        p = model.log_prob_z(zz).exp() * area
        x = deq._region(zz)
    idx = x[:, 0] if deq.n_vars == 1 else x[:, 0] * deq.n_classes + x[:, 1]
    valid = (x >= 0).all(-1)
    mass = torch.zeros(deq.n_classes**deq.n_vars, dtype=F64).index_add_(0, idx[valid], p[valid])
    return mass, float(p.sum())


def _classes(deq) -> torch.Tensor:
    if deq.n_vars == 1:
        return torch.arange(deq.n_classes)[:, None]
    return torch.cartesian_prod(torch.arange(deq.n_classes), torch.arange(deq.n_classes))


CASES = [
    ("voronoi", lambda: VoronoiDequantizer(1, 4, 2, hidden=16), 3.0, 1e-3),
    # softplus piles q's mass up near the orthant faces: coarser midpoint accuracy there
    ("argmax", lambda: ArgmaxDequantizer(1, 4, hidden=16), 9.0, 1e-2),
    ("uniform", lambda: UniformDequantizer(2, 4), 1.0, 1e-9),
]
IDS = [c[0] for c in CASES]


def _model(build):
    return _seeded(lambda: DequantizedFlow(build(), make_flow(2, hidden=(16, 16))).double(), 3)


@pytest.mark.parametrize("name,build,box,tol", CASES, ids=IDS)
def test_q_is_a_normalised_density_on_the_region_of_x(name, build, box, tol) -> None:
    """int_{region(x)} q(z | x) dz = 1 by quadrature (log q through the inverse maps), and
    the log q that sample() returns is log_q() at the sampled z."""
    deq = _model(build).dequantizer
    zz, area = _grid(box, 500)
    xs = _classes(deq)
    with torch.no_grad():
        lq = deq.log_q(zz[:, None, :].expand(-1, xs.shape[0], 2), xs)  # (cells, n_x)
        mass = (lq.exp() * area).sum(0)
        assert (lq.isfinite() == (deq._region(zz)[:, None, :] == xs).all(-1)).all()
        torch.testing.assert_close(mass, torch.ones_like(mass), rtol=0, atol=tol)
        z, lq_s = deq.sample(xs, 64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(deq.log_q(z, xs), lq_s, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name,build,box,tol", CASES, ids=IDS)
def test_bounds_against_the_exact_class_mass(name, build, box, tol) -> None:
    """P(x) = int_{region(x)} p(z) dz by quadrature: sum_x P(x) <= 1 (= 1 where the regions
    tile a box that p lives on), the ELBO lies below
    log P(x), IWAE_k rises with k and stays below log P(x) (Monte Carlo slack stated)."""
    model = _model(build)
    mass, in_box = _region_mass(model, box, 400)
    assert abs(float(mass.sum()) - in_box) < 1e-9
    if name == "argmax":  # the orthants tile R^2: the quadrature box holds mass <= 1
        assert float(mass.sum()) <= 1.0 + 1e-9
    else:  # p lives on the box the regions tile: sum_x P(x) = 1 (midpoint rule)
        assert abs(float(mass.sum()) - 1.0) < 1e-4
    xs = _classes(model.dequantizer)
    with torch.no_grad():
        w = model.log_weights(xs, 8192, generator=torch.Generator().manual_seed(4))
    log_p = mass.log()
    se = w.std(0) / math.sqrt(w.shape[0])
    assert (w.mean(0) <= log_p + 4 * se).all()  # ELBO <= log P(x)
    # IWAE_k averaged over 8192 / k groups: non-decreasing in k, below log P(x) + 0.02
    iw = [
        (torch.logsumexp(w.view(-1, k, w.shape[1]), 1) - math.log(k)).mean(0)
        for k in (1, 4, 16, 64)
    ]
    for a, b in itertools.pairwise(iw):
        assert (b >= a - 1e-3).all()
    assert (iw[-1] <= log_p + 0.02).all()
    if name == "uniform":  # q is exact up to a constant per cell: the weights are bounded,
        est = w.exp().mean(0)  # so E_q[p / q] = P(x) is checked directly (4 SE + quadrature)
        se_p = w.exp().std(0) / math.sqrt(w.shape[0])
        assert ((est - mass).abs() <= 4 * se_p + 1e-3 * mass).all()
    else:
        assert float((iw[-1] - iw[0]).min()) > 0


def test_elbo_and_iwae_methods_and_gradients() -> None:
    model = _seeded(
        lambda: DequantizedFlow(
            VoronoiDequantizer(2, 6, 2, hidden=16), make_flow(4, hidden=(16, 16))
        )
    )
    x = torch.randint(0, 6, (32, 2), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    elbo = model.elbo(x, 3, generator=g)
    g = torch.Generator().manual_seed(1)
    w = model.log_weights(x, 3, generator=g)
    torch.testing.assert_close(elbo, w.mean(0))
    g = torch.Generator().manual_seed(1)
    torch.testing.assert_close(model.iwae(x, 3, generator=g), torch.logsumexp(w, 0) - math.log(3))
    assert (
        model.iwae(x, 1, generator=torch.Generator().manual_seed(1))
        == model.elbo(x, 1, generator=torch.Generator().manual_seed(1))
    ).all()
    (-elbo.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    bpv = model.bits_per_var(x, 4)
    assert math.isfinite(bpv) and bpv > 0


def test_bad_input_raises() -> None:
    deq = _seeded(lambda: VoronoiDequantizer(2, 5, 2, hidden=8))
    with pytest.raises(FlowfieldsError, match="x"):
        deq.sample(torch.tensor([[0, 5]]))
    with pytest.raises(FlowfieldsError, match="x"):
        deq.sample(torch.tensor([[0, -1]]))
    with pytest.raises(FlowfieldsError, match="x"):
        deq.sample(torch.tensor([[0, 1, 2]]))
    with pytest.raises(FlowfieldsError, match="x"):
        deq.sample(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(FlowfieldsError, match="n_samples"):
        deq.sample(torch.tensor([[0, 1]]), 0)
    with pytest.raises(FlowfieldsError, match="n_classes"):
        VoronoiDequantizer(2, 1, 2)
    with pytest.raises(FlowfieldsError, match="kind"):
        make_dequantizer("dirichlet", 2, 4)
    # z of the wrong width, in decode and the flow's density; a flow on the wrong space
    for d in (deq, ArgmaxDequantizer(2, 5, hidden=8), UniformDequantizer(2, 5)):
        with pytest.raises(FlowfieldsError, match=rf"z: .*\(\.\.\., {d.features}\)"):
            d.decode(torch.zeros(1, d.features + 1))
    model = DequantizedFlow(deq, make_flow(4, transforms=1, hidden=(8,)))
    with pytest.raises(FlowfieldsError, match="z"):
        model.log_prob_z(torch.zeros(2, 5))
    with pytest.raises(FlowfieldsError, match=r"flow: .*\(3,\).*R\^4"):
        DequantizedFlow(deq, make_flow(3, transforms=1, hidden=(8,)))
    with pytest.raises(FlowfieldsError, match="dequantizer"):
        DequantizedFlow(make_flow(4), make_flow(4))
