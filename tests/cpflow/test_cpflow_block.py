"""ConvexPotentialBlock / CPFlow: the map is ∇F, log-dets (exact, SLQ, surrogate), inverse,
density, and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowfields.cpflow import ConvexPotentialBlock, CPFlow
from flowfields.errors import FlowfieldsError
from flowfields.linalg import logdet_surrogate, rademacher, slq_logdet

F64 = torch.float64


def _block(d: int, seed: int = 0, hidden: int = 16, depth: int = 3) -> ConvexPotentialBlock:
    torch.manual_seed(seed)
    blk = ConvexPotentialBlock(d, hidden, depth, alpha_init=0.5).double()
    blk.train()
    blk.potential(2 * torch.randn(256, d, dtype=F64))  # data-initialise the ICNN's ActNorms
    return blk.eval()


def _points(n: int, d: int, seed: int) -> torch.Tensor:
    return 2 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_map_is_finite_difference_gradient_of_potential() -> None:
    blk = _block(3)
    x = _points(5, 3, 1)
    y = blk(x)
    h = 1e-5
    fd = torch.stack(
        [
            (blk.potential(x + h * e) - blk.potential(x - h * e)) / (2 * h)
            for e in torch.eye(3, dtype=F64)
        ],
        -1,
    )
    assert float((y - fd).abs().max().detach()) < 1e-8


def test_exact_logdet_matches_slogdet_and_hessian_bounded_by_alpha() -> None:
    blk = _block(4, seed=2)
    x = _points(6, 4, 3)
    with torch.no_grad():
        _, ld = blk.forward_logdet(x, "exact")
    for i in range(6):
        H = torch.autograd.functional.hessian(lambda z: blk.potential(z[None])[0], x[i])
        assert abs(float(ld[i] - torch.linalg.slogdet(H).logabsdet)) < 1e-10
        assert float(torch.linalg.eigvalsh(H).min()) >= float(blk.alpha.detach()) - 1e-10


def test_slq_all_probes_exact_and_sampled_within_4se() -> None:
    d = 5
    blk = _block(d, seed=4)
    x = _points(1, d, 5)
    exact = float(blk.forward_logdet(x, "exact")[1].detach())
    V = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=F64)
    # every probe as its own row at the same point
    xs = x.expand(len(V), d).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(blk.potential(xs).sum(), xs, create_graph=True)

    def mv(u: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(g, xs, u, retain_graph=True)[0]

    assert abs(float(slq_logdet(mv, V, d).mean()) - exact) < 1e-8
    gen = torch.Generator().manual_seed(6)
    est = torch.stack(
        [blk.forward_logdet(x, "slq", lanczos_steps=3, generator=gen)[1][0] for _ in range(200)]
    )
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(200)


def test_surrogate_gradient_unbiased_against_autograd_logdet() -> None:
    """Averaged over all 2^d probes (CG tol 1e-12), ∇θ of the surrogate equals ∇θ log det."""
    d = 4
    blk = _block(d, seed=7, hidden=8, depth=2)
    x = _points(3, d, 8)
    params = [p for p in blk.parameters() if p.requires_grad]
    _, ld = blk.forward_logdet(x, "exact")
    g_exact = torch.autograd.grad(ld.sum(), params)
    V = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=F64)
    xs = x.repeat_interleave(len(V), 0)
    vs = V.repeat(3, 1)
    xs.requires_grad_(True)
    (g,) = torch.autograd.grad(blk.potential(xs).sum(), xs, create_graph=True)
    sur, cg = logdet_surrogate(blk._hvp(xs, g), vs, tol=1e-12, max_iter=50)
    g_sur = torch.autograd.grad(sur.sum() / len(V), params)
    err = max(float((a - b).abs().max()) for a, b in zip(g_sur, g_exact, strict=True))
    assert err < 1e-8, err
    assert bool(cg.converged.all())
    assert torch.allclose(sur, torch.full_like(sur, float(d)), atol=1e-8)  # value ≈ d


def test_surrogate_method_value_is_d() -> None:
    blk = _block(6, seed=9)
    _, sur = blk.forward_logdet(_points(10, 6, 10), "surrogate", cg_tol=1e-10)
    assert torch.allclose(sur, torch.full_like(sur, 6.0), atol=1e-6)


@pytest.mark.parametrize(("dtype", "tol"), [(F64, 1e-5), (torch.float32, 1e-3)])
def test_inverse_round_trip(dtype: torch.dtype, tol: float) -> None:
    blk = _block(3, seed=11).to(dtype)
    x = _points(200, 3, 12).to(dtype)
    y = blk(x).detach()
    res = blk.inverse(y)
    assert bool(res.converged.all())
    assert float((res.x - x).abs().max()) < tol
    assert int(res.iterations.max()) <= 20


def test_inverse_agrees_with_torch_lbfgs() -> None:
    blk = _block(2, seed=13)
    y = _points(16, 2, 14)
    ours = blk.inverse(y, tol=1e-12).x
    x = y.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1,
        max_iter=500,
        tolerance_grad=1e-13,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (blk.potential(x) - (x * y).sum(-1)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert float((x.detach() - ours).abs().max()) < 1e-7


def test_flow_density_sample_round_trip_and_normalisation() -> None:
    torch.manual_seed(15)
    flow = CPFlow(2, blocks=2, hidden=8, depth=2).double()
    flow.initialize(_points(256, 2, 16))
    det = flow.sample_details(300, generator=torch.Generator().manual_seed(17))
    assert det.converged
    z, _ = flow(det.x)
    assert float((z - det.z).abs().max()) < 1e-8
    # quadrature of exp(log_prob) over a box
    n, lo, hi = 120, -9.0, 9.0
    g = lo + (hi - lo) * (torch.arange(n, dtype=F64) + 0.5) / n
    pts = torch.cartesian_prod(g, g)
    with torch.no_grad():
        mass = float(flow.log_prob(pts).exp().sum()) * ((hi - lo) / n) ** 2
    assert abs(mass - 1.0) < 1e-3


def test_bad_input_raises() -> None:
    flow = CPFlow(2, blocks=1, hidden=4, depth=2).double()
    with pytest.raises(FlowfieldsError, match="x"):
        flow.log_prob(torch.zeros(3, 3, dtype=F64))
    with pytest.raises(FlowfieldsError, match="x"):
        flow.log_prob(torch.full((3, 2), float("nan"), dtype=F64))
    with pytest.raises(FlowfieldsError, match="activation"):
        CPFlow(2, activation="tanh")
    with pytest.raises(FlowfieldsError, match="blocks"):
        CPFlow(2, blocks=0)
    with pytest.raises(FlowfieldsError, match="tol"):
        flow.blocks[0].inverse(torch.zeros(2, 2, dtype=F64), tol=0.0)
    with pytest.raises(FlowfieldsError, match="tol"):
        flow.blocks[0].forward_logdet(torch.zeros(2, 2, dtype=F64), "surrogate", cg_tol=-1.0)
    with pytest.raises(FlowfieldsError, match="method"):
        flow.blocks[0].forward_logdet(torch.zeros(2, 2, dtype=F64), "hutchinson")
    with pytest.raises(FlowfieldsError, match="n"):
        flow.sample(0)
    v = rademacher((2, 2), like=torch.zeros(1, dtype=F64))
    assert set(v.unique().tolist()) <= {-1.0, 1.0}


def test_conditional_block_with_picnn() -> None:
    """A PICNN block: Hessian in x >= alpha for every context, exact log-det = slogdet,
    inverse round trip at the same context, and a missing context refused."""
    torch.manual_seed(20)
    blk = ConvexPotentialBlock(3, 12, 3, context_dim=2, alpha_init=0.3).double()
    x, c = _points(8, 3, 21), _points(8, 2, 22)
    _, ld = blk.forward_logdet(x, "exact", context=c)
    for i in range(8):
        H = torch.autograd.functional.hessian(
            lambda z, i=i: blk.potential(z[None], c[i : i + 1])[0], x[i]
        )
        assert float(torch.linalg.eigvalsh(H).min()) >= float(blk.alpha) - 1e-10
        assert abs(float(ld[i] - torch.linalg.slogdet(H).logabsdet)) < 1e-10
    y = blk(x, c).detach()
    res = blk.inverse(y, context=c)
    assert bool(res.converged.all()) and float((res.x - x).abs().max()) < 1e-8
    # a different context gives a different map
    assert float((blk(x, c.flip(0)) - y).abs().max().detach()) > 1e-3
    with pytest.raises(FlowfieldsError, match="context"):
        blk(x)
    with pytest.raises(FlowfieldsError, match="context"):
        _block(2)(torch.zeros(2, 2, dtype=F64), torch.zeros(2, 2, dtype=F64))


@pytest.mark.parametrize("conditional", [False, True])
def test_hessian_modes_agree_in_value_and_parameter_gradient(conditional: bool) -> None:
    """The closed form (hand-written sweeps), vmap(jacrev(grad F)) and the HVP loop give the
    same log-det, map and ∇θ in float64, through two stacked blocks (the second block's input
    depends on the first block's parameters)."""
    d = 6
    kw = {"context_dim": 3} if conditional else {}
    c = _points(5, 3, 30) if conditional else None
    x = _points(5, d, 31)
    results = []
    for mode in ("loop", "vmap", "analytic"):
        torch.manual_seed(32)
        b1 = ConvexPotentialBlock(d, 8, 2, hessian_mode=mode, **kw).double()
        b2 = ConvexPotentialBlock(d, 8, 2, hessian_mode=mode, **kw).double()
        y1, ld1 = b1.forward_logdet(x, "exact", context=c)
        _, ld2 = b2.forward_logdet(y1, "exact", context=c)
        total = (ld1 + ld2).sum() + (y1 * y1).sum()
        params = [*b1.parameters(), *b2.parameters()]
        grads = torch.autograd.grad(total, params, allow_unused=True)
        results.append((total.detach(), [g for g in grads if g is not None]))
    t0, g0 = results[0]
    for t1, g1 in results[1:]:
        assert abs(float(t0 - t1)) < 1e-10
        assert len(g0) == len(g1)
        assert max(float((a - b).abs().max()) for a, b in zip(g0, g1, strict=True)) < 1e-10
