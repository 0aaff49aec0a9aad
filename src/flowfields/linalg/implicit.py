"""Implicit differentiation of linear systems ``A(θ) x = b`` in real and complex arithmetic.

Two front doors, both autograd-aware and both differentiated by the implicit function theorem:

- :func:`solve` takes an explicit (dense, batched) matrix ``A`` and right-hand side ``b`` and
  solves with dense LU (torch), sparse LU (``scipy.sparse.linalg.splu``) or a preconditioned
  Krylov method (``scipy.sparse.linalg.gmres`` / ``bicgstab`` with an incomplete-LU
  preconditioner). Backward: one adjoint solve ``A^H λ = g`` and ``grad_A = -λ x^H``,
  ``grad_b = λ`` (dense LU factors are reused; nothing from Krylov iterations is kept).
- :func:`implicit_linear_solve` never forms ``A`` as a tensor: it takes a differentiable
  matrix-free ``apply_A(x, *params) = A(params) x`` and two black-box solvers (forward and
  adjoint). Backward: ``λ = solve_adjoint(g)`` and the parameters' gradient is the VJP of
  ``params -> A(params) x`` at cotangent ``-λ`` -- one adjoint solve plus one VJP through the
  construction of ``A``, so the cost does not grow with the number of parameters and the
  memory does not grow with the forward solver's iterations.

Complex conventions follow PyTorch (conjugate Wirtinger): for a real loss ``ℓ`` the gradient of
a complex input ``z`` is ``∂ℓ/∂Re z + i ∂ℓ/∂Im z``; for ``x = A^{-1} b`` this gives exactly
``grad_b = A^{-H} g`` and ``grad_A = -grad_b x^H`` (the same as ``torch.linalg.solve``).

Also here: :func:`replace_row` (the normalisation-row trick for null vectors: ``A x = 0`` with
``w^T x = 1`` becomes a nonsingular square system when the null space is one-dimensional) and
:class:`SingularSystemError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from flowfields.errors import FlowfieldsError, check, check_finite

__all__ = [
    "METHODS",
    "SingularSystemError",
    "check_pivots",
    "implicit_linear_solve",
    "krylov_solver",
    "replace_row",
    "solve",
    "sparse_lu_solver",
]

#: Forward methods of :func:`solve`.
METHODS = ("dense", "sparse", "krylov")


class SingularSystemError(FlowfieldsError):
    """The linear system is singular (or numerically so): its solution is not unique."""


def check_pivots(diag: np.ndarray | torch.Tensor, tol: float, what: str) -> None:
    """Raise :class:`SingularSystemError` if ``min |U_ii| <= tol * max |U_ii|``.

    Args:
        diag: the diagonal of an LU factor ``U`` (any shape; a tensor or an array).
        tol: the pivot-ratio threshold (``singular_tol``).
        what: the name of the system in the message (e.g. ``"steady_state[2]"``).
    """
    a = diag.detach().abs().cpu().numpy() if isinstance(diag, torch.Tensor) else np.abs(diag)
    big = float(a.max()) if a.size else 0.0
    small = float(a.min()) if big > 0 else 0.0
    if big == 0.0 or small <= tol * big:
        ratio = small / big if big > 0 else 0.0
        raise SingularSystemError(
            f"{what}: the matrix is singular to working precision (smallest/largest LU pivot "
            f"= {ratio:.3e} <= singular_tol={tol:.1e}), so the solution is not unique. "
            "For a steady state this means the Liouvillian has more than one zero eigenvalue "
            "(several steady states): add dissipation that connects the invariant subspaces."
        )


def _to_scipy(A: torch.Tensor) -> sp.csc_matrix:
    return sp.csc_matrix(A.detach().cpu().numpy())


def sparse_lu_solver(
    A: sp.spmatrix, *, singular_tol: float = 1e-12, what: str = "A"
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """Sparse LU (SuperLU, COLAMD ordering) of ``A``: ``(solve, solve_adjoint)`` callables.

    Raises:
        SingularSystemError: if SuperLU finds an exactly zero pivot or the pivot ratio is below
            ``singular_tol``.
    """
    try:
        lu = spla.splu(sp.csc_matrix(A), permc_spec="COLAMD")
    except RuntimeError as e:  # "Factor is exactly singular"
        raise SingularSystemError(
            f"{what}: sparse LU failed ({e}); the system is singular and its solution is not "
            "unique."
        ) from e
    check_pivots(lu.U.diagonal(), singular_tol, what)
    return (lambda r: lu.solve(r)), (lambda r: lu.solve(r, trans="H"))


def krylov_solver(
    A: sp.spmatrix,
    *,
    kind: str = "gmres",
    rtol: float = 1e-12,
    maxiter: int = 2000,
    drop_tol: float = 1e-5,
    fill_factor: float = 20.0,
    what: str = "A",
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """Preconditioned Krylov solves of ``A`` and ``A^H``: ``(solve, solve_adjoint)``.

    The preconditioner is an incomplete LU (``scipy.sparse.linalg.spilu``) of ``A`` (and of
    ``A^H`` for the adjoint, built lazily). ``kind`` is ``"gmres"`` or ``"bicgstab"``.

    Raises:
        SingularSystemError: if the iteration does not reach ``rtol`` (a singular or badly
            conditioned system, or too small ``maxiter``).
    """
    check(kind in ("gmres", "bicgstab"), "kind", kind, "'gmres' or 'bicgstab'")
    A = sp.csc_matrix(A)
    routine = spla.gmres if kind == "gmres" else spla.bicgstab

    def make(M: sp.csc_matrix) -> Callable[[np.ndarray], np.ndarray]:
        cache: dict[str, Any] = {}

        def run(r: np.ndarray) -> np.ndarray:
            if "P" not in cache:
                try:
                    ilu = spla.spilu(M, drop_tol=drop_tol, fill_factor=fill_factor)
                except RuntimeError as e:
                    raise SingularSystemError(
                        f"{what}: incomplete LU failed ({e}); the system is singular."
                    ) from e
                cache["P"] = spla.LinearOperator(M.shape, ilu.solve, dtype=M.dtype)
            kw: dict[str, Any] = {"rtol": rtol, "atol": 0.0, "maxiter": maxiter, "M": cache["P"]}
            if kind == "gmres":
                kw["restart"] = min(100, M.shape[0])
            x, info = routine(M, r, **kw)
            res = float(np.linalg.norm(M @ x - r)) / max(float(np.linalg.norm(r)), 1e-300)
            if info != 0 and res > 1e3 * rtol:
                raise SingularSystemError(
                    f"{what}: {kind} did not converge (info={info}, relative residual "
                    f"{res:.2e} > {rtol:.0e}); the system may be singular. Try method='sparse' "
                    "or 'dense', or raise maxiter."
                )
            return x

        return run

    return make(A), make(sp.csc_matrix(A.conj().T))


class _DenseSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor, b: torch.Tensor, singular_tol: float):
        LU, piv, _ = torch.linalg.lu_factor_ex(A)
        diags = torch.diagonal(LU, dim1=-2, dim2=-1).reshape(-1, A.shape[-1])
        for i, d in enumerate(diags):
            check_pivots(d, singular_tol, "A" if diags.shape[0] == 1 else f"A[{i}]")
        x = torch.linalg.lu_solve(LU, piv, b.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(LU, piv, x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        LU, piv, x = ctx.saved_tensors
        lam = torch.linalg.lu_solve(LU, piv, g.unsqueeze(-1), adjoint=True).squeeze(-1)
        grad_A = -lam.unsqueeze(-1) * x.conj().unsqueeze(-2)
        return grad_A, lam, None


class _ScipySolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor, b: torch.Tensor, method: str, opts: dict):
        As = A.reshape(-1, *A.shape[-2:])
        bs = b.reshape(-1, b.shape[-1])
        solvers, xs = [], []
        for i in range(As.shape[0]):
            M = _to_scipy(As[i])
            what = "A" if As.shape[0] == 1 else f"A[{i}]"
            if method == "sparse":
                s = sparse_lu_solver(M, singular_tol=opts.get("singular_tol", 1e-12), what=what)
            else:
                s = krylov_solver(
                    M,
                    kind=opts.get("kind", "gmres"),
                    rtol=opts.get("rtol", 1e-12),
                    maxiter=opts.get("maxiter", 2000),
                    what=what,
                )
            solvers.append(s)
            xs.append(torch.as_tensor(s[0](bs[i].detach().cpu().numpy())))
        x = torch.stack(xs).to(device=A.device, dtype=A.dtype).reshape(b.shape)
        ctx.solvers = solvers
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        gs = g.reshape(-1, g.shape[-1]).detach().cpu().numpy()
        lam = torch.stack([torch.as_tensor(s[1](gs[i])) for i, s in enumerate(ctx.solvers)])
        lam = lam.to(device=g.device, dtype=g.dtype).reshape(g.shape)
        grad_A = -lam.unsqueeze(-1) * x.conj().unsqueeze(-2)
        return grad_A, lam, None, None


def solve(
    A: torch.Tensor,
    b: torch.Tensor,
    *,
    method: str = "dense",
    singular_tol: float = 1e-12,
    rtol: float = 1e-12,
    kind: str = "gmres",
    maxiter: int = 2000,
) -> torch.Tensor:
    """Solve ``A x = b`` differentiably in ``A`` and ``b`` (implicit backward).

    Args:
        A: (..., n, n) real or complex matrix (batched over leading dims).
        b: (..., n) right-hand side, same dtype and batch shape.
        method: ``"dense"`` (torch LU), ``"sparse"`` (SuperLU) or ``"krylov"`` (ILU-
            preconditioned GMRES / BiCGStab, see ``kind``).
        singular_tol: LU pivot-ratio threshold below which the system is declared singular.
        rtol: relative residual target of the Krylov solver.
        kind: Krylov method, ``"gmres"`` or ``"bicgstab"``.
        maxiter: Krylov iteration cap.

    Returns:
        x: (..., n). Its backward costs one adjoint solve with ``A^H``.

    Raises:
        FlowfieldsError: bad shapes or method; :class:`SingularSystemError` if ``A`` is singular.
    """
    check(isinstance(A, torch.Tensor) and A.ndim >= 2, "A", A, "a (..., n, n) tensor")
    check(
        A.shape[-1] == A.shape[-2] and A.shape[-1] > 0,
        "A",
        A,
        "a non-empty square matrix (..., n, n), n >= 1",
    )
    check(
        A.is_floating_point() or A.is_complex(),
        "A",
        A,
        "a floating-point or complex tensor",
    )
    check_finite(A, "A")
    check(isinstance(b, torch.Tensor), "b", b, "a torch.Tensor")
    check(
        tuple(b.shape) == tuple(A.shape[:-1]),
        "b",
        b,
        f"shape {tuple(A.shape[:-1])} matching A",
    )
    check(method in METHODS, "method", method, f"one of {METHODS}")
    check(b.is_floating_point() or b.is_complex(), "b", b, "a floating-point or complex tensor")
    check_finite(b, "b")
    if A.dtype != b.dtype:
        dt = torch.promote_types(A.dtype, b.dtype)
        A, b = A.to(dt), b.to(dt)
    if method == "dense":
        return _DenseSolve.apply(A, b, singular_tol)
    opts = {"singular_tol": singular_tol, "rtol": rtol, "kind": kind, "maxiter": maxiter}
    return _ScipySolve.apply(A, b, method, opts)


def replace_row(A: torch.Tensor, row: int, w: torch.Tensor) -> torch.Tensor:
    """``A`` with row ``row`` replaced by ``w`` (differentiable in ``A`` off that row).

    With ``b = e_row`` the system ``replace_row(A, row, w) x = b`` is the null vector of ``A``
    normalised by ``w^T x = 1`` -- nonsingular exactly when the null space is one-dimensional,
    ``w`` is not orthogonal to it and row ``row`` is redundant (a combination of the others).

    Args:
        A: (..., n, n).
        row: index of the redundant row.
        w: (n,) normalisation row.
    """
    n = A.shape[-1]
    check(-n <= row < n, "row", row, f"an index in [0, {n})")
    mask = torch.zeros(n, 1, dtype=torch.bool, device=A.device)
    mask[row] = True
    return torch.where(mask, w.to(A.dtype).expand_as(A), A)


class _ImplicitSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fns, b, *params):
        _, solve_fwd, _ = fns
        with torch.no_grad():
            x = solve_fwd(b.detach())
        ctx.fns = fns
        ctx.save_for_backward(x, *params)
        return x

    @staticmethod
    def backward(ctx, g):
        apply_A, _, solve_adj = ctx.fns
        x, *params = ctx.saved_tensors
        with torch.no_grad():
            lam = solve_adj(g)
        needs = ctx.needs_input_grad[2:]
        grads: list[torch.Tensor | None] = [None] * len(params)
        idx = [i for i, n in enumerate(needs) if n]
        if idx:
            with torch.enable_grad():
                ps = [p.detach().requires_grad_(i in idx) for i, p in enumerate(params)]
                y = apply_A(x, *ps)
                got = torch.autograd.grad(
                    y, [ps[i] for i in idx], grad_outputs=-lam, allow_unused=True
                )
            for i, gr in zip(idx, got):
                grads[i] = gr
        grad_b = lam if ctx.needs_input_grad[1] else None
        return (None, grad_b, *grads)


def implicit_linear_solve(
    apply_A: Callable[..., torch.Tensor],
    params: Sequence[torch.Tensor],
    b: torch.Tensor,
    *,
    solve_forward: Callable[[torch.Tensor], torch.Tensor],
    solve_adjoint: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Matrix-free ``x = A(params)^{-1} b`` with an implicit backward.

    Args:
        apply_A: ``apply_A(x, *params) -> A(params) x``, differentiable in ``params`` (torch
            ops only); called once in backward with the solution ``x``.
        params: tensors ``A`` depends on (those requiring grad receive gradients).
        b: right-hand side (may require grad).
        solve_forward: black box ``b -> x`` (any algorithm; not differentiated).
        solve_adjoint: black box ``g -> λ`` solving ``A^H λ = g``.

    Returns:
        x with backward ``λ = solve_adjoint(g)``, ``grad_b = λ``,
        ``grad_params = VJP(params -> A(params) x)(-λ)``.
    """
    check(callable(apply_A), "apply_A", apply_A, "a callable (x, *params) -> A x")
    return _ImplicitSolve.apply((apply_A, solve_forward, solve_adjoint), b, *params)
