"""Krylov methods: CG against torch.linalg.solve, Lanczos identities, SLQ against slogdet, and
the CG log-det gradient surrogate (unbiased over all probes; memory constant in CG steps)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.linalg import (
    conjugate_gradient,
    lanczos,
    logdet_surrogate,
    rademacher,
    slq_logdet,
)

F64 = torch.float64


def _spd(B: int, d: int, cond: float, seed: int) -> torch.Tensor:
    """B random SPD matrices with eigenvalues log-spaced in [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(B, d, d, generator=g, dtype=F64))
    lam = torch.logspace(0, math.log10(cond), d, dtype=F64)
    return Q @ torch.diag_embed(lam.expand(B, d)) @ Q.transpose(-1, -2)


def _mv(A: torch.Tensor):
    return lambda v: torch.einsum("bij,bj->bi", A, v)


def _all_probes(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=F64)


def test_cg_matches_solve_and_counts_iterations() -> None:
    A = _spd(4, 20, 100.0, 0)
    A[0] = torch.eye(20, dtype=F64) * 3.0  # one row converges in a single step
    b = torch.randn(4, 20, generator=torch.Generator().manual_seed(1), dtype=F64)
    res = conjugate_gradient(_mv(A), b, tol=1e-12, max_iter=200)
    ref = torch.linalg.solve(A, b)
    assert bool(res.converged.all())
    assert float(((res.x - ref).norm(dim=-1) / ref.norm(dim=-1)).max()) < 1e-9
    assert int(res.iterations[0]) == 1
    assert 1 < int(res.iterations[1:].min()) and int(res.iterations.max()) <= 40
    true_res = (torch.einsum("bij,bj->bi", A, res.x) - b).norm(dim=-1)
    assert bool((true_res <= 1e-10 * b.norm(dim=-1)).all())


def test_cg_iterations_grow_with_conditioning_and_cap_is_respected() -> None:
    b = torch.randn(1, 40, generator=torch.Generator().manual_seed(2), dtype=F64)
    its = [
        int(conjugate_gradient(_mv(_spd(1, 40, c, 3)), b, tol=1e-8, max_iter=500).iterations)
        for c in (2.0, 1e2, 1e4)
    ]
    assert its[0] < its[1] < its[2]
    capped = conjugate_gradient(_mv(_spd(1, 40, 1e4, 3)), b, tol=1e-12, max_iter=3)
    assert int(capped.iterations) == 3 and not bool(capped.converged)


def test_lanczos_orthonormal_and_tridiagonalises() -> None:
    A = _spd(3, 12, 50.0, 4)
    v = rademacher((3, 12), like=A, generator=torch.Generator().manual_seed(5))
    res = lanczos(_mv(A), v, 12)
    Q = res.Q  # (B, m, d)
    eye = torch.eye(12, dtype=F64).expand(3, 12, 12)
    assert torch.allclose(Q @ Q.transpose(-1, -2), eye, atol=1e-10)
    assert torch.allclose(Q @ A @ Q.transpose(-1, -2), res.tridiagonal(), atol=1e-9)


def test_slq_over_all_probes_is_exact_and_sampled_mean_within_4se() -> None:
    d = 6
    A = _spd(1, d, 30.0, 6)[0]
    V = _all_probes(d)
    est = slq_logdet(_mv(A.expand(len(V), d, d)), V, d)
    exact = float(torch.linalg.slogdet(A).logabsdet)
    assert abs(float(est.mean()) - exact) < 1e-8
    # sampled: 400 Rademacher probes at d = 30, m = 12 Lanczos steps
    A = _spd(1, 30, 30.0, 7)[0]
    V = rademacher((400, 30), like=A, generator=torch.Generator().manual_seed(8))
    est = slq_logdet(_mv(A.expand(400, 30, 30)), V, 12)
    se = float(est.std()) / math.sqrt(400)
    assert abs(float(est.mean()) - float(torch.linalg.slogdet(A).logabsdet)) < 4 * se


def _param_hvp(theta: torch.Tensor, d: int):
    """H(θ) = M M^T + I with M = θ reshaped (d, d): an SPD operator differentiable in θ."""

    def hvp(u: torch.Tensor, create_graph: bool) -> torch.Tensor:
        M = theta.view(d, d) if create_graph else theta.detach().view(d, d)
        return u @ (M @ M.T + torch.eye(d, dtype=F64))

    return hvp


def test_surrogate_gradient_unbiased_over_all_probes() -> None:
    d = 5
    theta = torch.randn(d * d, generator=torch.Generator().manual_seed(9), dtype=F64)
    theta.requires_grad_(True)
    V = _all_probes(d)
    sur, cg = logdet_surrogate(_param_hvp(theta, d), V, tol=1e-12, max_iter=100)
    (g_sur,) = torch.autograd.grad(sur.mean(), theta)
    M = theta.view(d, d)
    (g_exact,) = torch.autograd.grad(torch.logdet(M @ M.T + torch.eye(d, dtype=F64)), theta)
    assert float((g_sur - g_exact).abs().max()) < 1e-8
    # its value is v.v = d (not a log-determinant), and CG converged
    assert torch.allclose(sur, torch.full_like(sur, float(d)), atol=1e-8)
    assert bool(cg.converged.all())
    # the check has power: an unconverged CG (2 steps) is biased
    sur2, _ = logdet_surrogate(_param_hvp(theta, d), V, tol=1e-12, max_iter=2)
    (g2,) = torch.autograd.grad(sur2.mean(), theta)
    assert float((g2 - g_exact).abs().max()) > 1e-4


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_surrogate_memory_constant_in_cg_iterations_unlike_backprop_through_cg() -> None:
    d = 60
    theta = 0.3 * torch.randn(d * d, generator=torch.Generator().manual_seed(10), dtype=F64)
    theta.requires_grad_(True)
    v = rademacher((2, d), like=theta, generator=torch.Generator().manual_seed(11))
    hvp = _param_hvp(theta, d)
    ours = [
        _saved_bytes(lambda k=k: logdet_surrogate(hvp, v, tol=1e-30, max_iter=k)) for k in (5, 50)
    ]
    assert ours[0] == ours[1] > 0
    through = [
        _saved_bytes(
            lambda k=k: conjugate_gradient(
                lambda u: hvp(u, True), v, tol=1e-30, max_iter=k, differentiable=True
            )
        )
        for k in (5, 50)
    ]
    assert through[1] > 5 * through[0] > 0


def test_bad_input_raises() -> None:
    A = _spd(1, 3, 2.0, 0)
    b = torch.ones(1, 3, dtype=F64)
    for tol in (0.0, -1.0):
        with pytest.raises(FlowfieldsError, match="tol"):
            conjugate_gradient(_mv(A), b, tol=tol)
    with pytest.raises(FlowfieldsError, match="max_iter"):
        conjugate_gradient(_mv(A), b, max_iter=0)
    with pytest.raises(FlowfieldsError, match="b"):
        conjugate_gradient(_mv(A), torch.ones(3, dtype=F64))
    with pytest.raises(FlowfieldsError, match="b"):
        conjugate_gradient(_mv(A), torch.full((1, 3), float("nan"), dtype=F64))
    with pytest.raises(FlowfieldsError, match="m"):
        lanczos(_mv(A), b, 4)
