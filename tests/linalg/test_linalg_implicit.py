"""Implicit differentiation of linear systems: values and gradients against torch.linalg.solve,
float64 gradcheck, the normalisation-row null vector, singular systems and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
import torch

from flowfields.errors import FlowfieldsError
from flowfields.linalg import (
    SingularSystemError,
    implicit_linear_solve,
    replace_row,
    solve,
)

METHODS = ["dense", "sparse", "krylov"]


def _well_conditioned(n: int, dtype: torch.dtype, batch: tuple[int, ...] = ()) -> torch.Tensor:
    A = torch.randn(*batch, n, n, dtype=dtype)
    return A + n * torch.eye(n, dtype=dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_solve_matches_torch_values_and_grads(method: str, dtype: torch.dtype) -> None:
    A = _well_conditioned(6, dtype, (2,)).requires_grad_()
    b = torch.randn(2, 6, dtype=dtype, requires_grad=True)
    w = torch.randn(2, 6, dtype=dtype)
    x = solve(A, b, method=method)
    ref = torch.linalg.solve(A, b)
    assert torch.allclose(x, ref, atol=1e-11, rtol=0)
    loss = (w.conj() * x).real.sum() + (x.abs() ** 2).sum()
    loss_ref = (w.conj() * ref).real.sum() + (ref.abs() ** 2).sum()
    gA, gb = torch.autograd.grad(loss, [A, b])
    hA, hb = torch.autograd.grad(loss_ref, [A, b])
    assert torch.allclose(gA, hA, atol=1e-10, rtol=0)
    assert torch.allclose(gb, hb, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_dense_solve_gradcheck(dtype: torch.dtype) -> None:
    A = _well_conditioned(4, dtype).requires_grad_()
    b = torch.randn(4, dtype=dtype, requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, b: solve(A, b), (A, b))


def test_sparse_solve_gradcheck() -> None:
    A = _well_conditioned(4, torch.complex128).requires_grad_()
    b = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, b: solve(A, b, method="sparse"), (A, b))


def test_implicit_linear_solve_matrix_free_gradient() -> None:
    # A(θ) = A0 + Σ θ_p G_p (complex), gradient w.r.t. real θ and complex b vs autograd
    n, P = 5, 3
    A0 = _well_conditioned(n, torch.complex128)
    G = torch.randn(P, n, n, dtype=torch.complex128)
    theta = torch.randn(P, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, dtype=torch.complex128, requires_grad=True)

    def A_of(t: torch.Tensor) -> torch.Tensor:
        return A0 + (t.to(torch.complex128)[:, None, None] * G).sum(0)

    def fwd(r: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(A_of(theta.detach()), r)

    def adj(g: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(A_of(theta.detach()).mH, g)

    x = implicit_linear_solve(
        lambda x, t: A_of(t) @ x, (theta,), b, solve_forward=fwd, solve_adjoint=adj
    )
    loss = (x.abs() ** 2).sum()
    gt, gb = torch.autograd.grad(loss, [theta, b])
    x_ref = torch.linalg.solve(A_of(theta), b)
    ht, hb = torch.autograd.grad((x_ref.abs() ** 2).sum(), [theta, b])
    assert torch.allclose(x, x_ref, atol=1e-12)
    assert torch.allclose(gt, ht, atol=1e-10)
    assert torch.allclose(gb, hb, atol=1e-10)


def test_replace_row_gives_stationary_distribution() -> None:
    # Continuous-time Markov generator Q (columns sum to 0): stationary p with Q p = 0, sum p = 1
    rng = np.random.default_rng(0)
    R = rng.uniform(0.1, 1.0, (5, 5))
    np.fill_diagonal(R, 0.0)
    Q = R - np.diag(R.sum(0))
    A = replace_row(torch.as_tensor(Q), 0, torch.ones(5, dtype=torch.float64))
    b = torch.zeros(5, dtype=torch.float64)
    b[0] = 1.0
    p = solve(A, b).numpy()
    null = sla.null_space(Q)[:, 0]
    assert np.allclose(p, null / null.sum(), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_singular_system_raises(method: str) -> None:
    A = torch.randn(5, 5, dtype=torch.float64)
    A[:, 2] = A[:, 0] + A[:, 1]  # rank 4
    b = torch.randn(5, dtype=torch.float64)
    with pytest.raises(SingularSystemError, match=r"singular|converge"):
        solve(A, b, method=method)


def test_bad_input_raises() -> None:
    with pytest.raises(FlowfieldsError, match="A"):
        solve(torch.randn(3, 4), torch.randn(3))
    with pytest.raises(FlowfieldsError, match="b"):
        solve(torch.randn(3, 3), torch.randn(4))
    with pytest.raises(FlowfieldsError, match="method"):
        solve(torch.eye(3), torch.ones(3), method="qr")
