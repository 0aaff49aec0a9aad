"""Differentiable steady states of Lindblad master equations (implicit function theorem).

The steady state is the trace-one null vector of ``L``: ``L vec(ρ) = 0``, ``Tr ρ = 1``. Since
``vec(I)^T L = 0`` (trace preservation), the row of ``L`` for ``ρ[0, 0]`` is a combination of the
other diagonal rows; replacing it by the trace row ``w = vec(I)^T`` gives the square system
``A x = e_0``, nonsingular exactly when the steady state is unique.

Forward methods (``method=``):

- ``"dense"``: LU of the dense augmented matrix, in real arithmetic: in an orthonormal basis of
  Hermitian matrices a Lindbladian is a real matrix, assembled there directly from
  ``(H, C, g)`` (real matrix products and one elementwise combination, no complex d² x d²
  intermediate) in reused per-thread scratch buffers, then torch's batched LU. A dense
  Liouvillian *matrix* input is solved by complex LU (:func:`flowfields.linalg.solve`).
- ``"sparse"``: SuperLU of the sparse augmented matrix (scipy, COLAMD ordering).
- ``"krylov"``: GMRES (or BiCGStab) preconditioned by an incomplete LU (scipy) -- large systems.
- ``"evolve"``: time integration ``ρ(t) = exp(L t) ρ(0)`` to long times (``scipy.linalg.expm``
  with repeated squaring -- the step doubles each time -- for d² <= 1024, else
  ``scipy.sparse.linalg.expm_multiply`` on a doubling time grid), stopped when
  ``||L ρ||_1 <= tol * ||L||_1`` (``tol`` following the dtype) and the residual no longer
  halves; a stalled residual or an overflowing propagator raises, saying which.

Backward, whatever the forward method: one adjoint solve ``A^H λ = g`` (dense LU for dense, the
forward's SuperLU factors for sparse, preconditioned GMRES on ``A^H`` for krylov, SuperLU / dense
LU for evolve) and one VJP through the construction of ``L`` at cotangent ``-λ``. Nothing from
the forward iterations is kept, and the cost is independent of the number of parameters.

Non-uniqueness: an LU pivot ratio ``min|U_ii| / max|U_ii| <= singular_tol`` (default 1e-12), an
exactly singular SuperLU factor, or a Krylov solve that does not converge raises
:class:`flowfields.linalg.SingularSystemError` (a ``FlowfieldsError``). For ``"evolve"`` the
check is a forward sparse LU (``check_unique=True``, the default) and happens in the adjoint
solve (backward) otherwise.

Paper: Vargas-Hernández, Chen, Jung, Brumer, "Fully differentiable optimization protocols for
non-equilibrium steady states" (arXiv:2103.12604).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from flowfields.errors import FlowfieldsError, check
from flowfields.linalg import (
    check_pivots,
    implicit_linear_solve,
    krylov_solver,
    replace_row,
    sparse_lu_solver,
)
from flowfields.linalg import solve as linear_solve
from flowfields.quantum.liouvillian import Lindbladian, unvec, vec

__all__ = ["AUTO_DENSE_MAX", "STEADY_METHODS", "evolve_default_tol", "steady_state"]

#: Forward methods accepted by :func:`steady_state`.
STEADY_METHODS = ("dense", "sparse", "krylov", "evolve")

#: ``method="auto"`` uses dense LU up to this many unknowns d², sparse LU above.
AUTO_DENSE_MAX = 256


def _trace_row(d: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    w = torch.zeros(d * d, dtype=dtype, device=device)
    w[:: d + 1] = 1.0
    return w


def _augmented_scipy(L: sp.spmatrix, d: int) -> sp.csc_matrix:
    """Sparse ``L`` with row 0 replaced by the trace row ``vec(I)^T``."""
    n = d * d
    keep = np.ones(n)
    keep[0] = 0.0
    trace = sp.csr_matrix(
        (np.ones(d), (np.zeros(d, dtype=int), np.arange(d) * (d + 1))), shape=(n, n)
    )
    return sp.csc_matrix(sp.diags(keep) @ sp.csr_matrix(L) + trace)


#: A doubling must cut the residual at least this much to count as progress.
_PROGRESS = 0.5
#: Doublings without progress before ``"evolve"`` calls the residual stalled -- and only once
#: it fell below ``sqrt(eps)`` times its first value: a slowly relaxing system sits on a
#: plateau near its first residual for ``log2(||L|| / gap)`` doublings before it decays.
_STALL_DOUBLINGS = 6


def evolve_default_tol(dtype: Any) -> float:
    """Default ``tol`` of ``method="evolve"`` for a Liouvillian of this (complex) dtype:
    1e-13 in double precision, 1e-5 in single (its rounding floor is about 1e-7)."""
    single = dtype in (torch.complex64, torch.float32, np.complex64, np.float32)
    return 1e-5 if single else 1e-13


def _propagator(Ls: sp.csr_matrix, t: float, dense: bool) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> exp(L T) x`` with ``T`` doubling at every call (dense squaring or
    ``expm_multiply`` on a doubling time grid)."""
    state: dict[str, Any] = {"t": t}
    if dense:
        state["P"] = sla.expm(Ls.toarray() * t)

    def advance(x: np.ndarray) -> np.ndarray:
        if dense:
            x = state["P"] @ x
            state["P"] = state["P"] @ state["P"]
        else:
            x = spla.expm_multiply(Ls * state["t"], x)
            state["t"] *= 2.0
        return x

    return advance


def _evolve(
    L: sp.spmatrix | np.ndarray, d: int, tol: float, max_doublings: int, dtype: Any
) -> np.ndarray:
    """Long-time limit of ``exp(L t) vec(I/d)``, polished to the rounding floor.

    The time doubles at every step. Once ``||L rho||_1 <= tol ||L||_1`` it keeps doubling
    while the residual still halves (each doubling squares the decay of the transient, so
    this costs one or two steps and makes small populations accurate to the floor, not only
    relative to the whole matrix). Stops with a FlowfieldsError when the propagator
    overflows, the residual stalls above ``tol`` or ``max_doublings`` run out. ``dtype`` is
    the precision the Liouvillian was given in (its rounding floor).
    """
    n = d * d
    Ls = sp.csr_matrix(L)
    single = evolve_default_tol(dtype) > 1e-10
    eps = float(np.finfo(np.complex64 if single else np.complex128).eps)
    norm = float(abs(Ls).sum(axis=0).max()) or 1.0
    advance = _propagator(Ls, 1.0 / norm, dense=n <= 1024)
    x = np.zeros(n, dtype=complex)
    x[:: d + 1] = 1.0 / d
    best, best_x, idle, k, why, first = np.inf, x, 0, 0, "budget", np.inf
    for k in range(1, max_doublings + 1):
        with np.errstate(all="ignore"):
            x = advance(x)
            x = x / x[:: d + 1].sum()
            res = float(np.abs(Ls @ x).sum()) / norm
        if not np.isfinite(res):
            why = "overflow"
            break
        first = min(first, res) if k == 1 else first
        idle = 0 if res < _PROGRESS * best else idle + 1
        if res < best:
            best, best_x = res, x
        if best <= tol and (idle > 0 or best <= 10 * eps):
            return best_x
        if idle >= _STALL_DOUBLINGS and best <= math.sqrt(eps) * first:
            why = "stall"
            break
    raise _evolve_failure(why, best, tol, k, norm, "complex64" if single else "complex128", eps)


def _evolve_failure(
    why: str, best: float, tol: float, k: int, norm: float, dtype: str, eps: float
) -> FlowfieldsError:
    head = (
        f"steady_state(method='evolve'): ||L rho||_1 / ||L||_1 = {best:.2e} after {k} time "
        f"doublings (t = {2.0 ** (k - 1) / norm:.3g}), expected <= tol = {tol:.0e}"
    )
    if why == "overflow":
        tail = (
            f"The propagator overflowed: rounding (in {dtype}, eps {eps:.1e}) lifts the "
            "Liouvillian's zero eigenvalue slightly above zero, so exp(L t) grows."
        )
    elif why == "stall":
        tail = (
            f"The residual stalled at the rounding floor of {dtype}: pass "
            f"tol >= {2 * best:.0e}, or use complex128."
        )
    else:
        tail = "The relaxation is too slow (or oscillates): raise max_doublings."
    return FlowfieldsError(f"{head}. {tail} method='sparse' solves the same system directly.")


def _as_lindbladian_or_matrix(L: Any) -> Lindbladian | torch.Tensor:
    if isinstance(L, Lindbladian):
        check(L.dim >= 1, "L", L.H, "a Lindbladian of dimension d >= 1")
        for name in ("H", "C", "rates"):
            part = getattr(L, name)
            check(
                bool(torch.isfinite(part).all()),
                f"L.{name}",
                part,
                "finite entries (NaN or Inf would make every entry of rho NaN)",
            )
        return L
    if hasattr(L, "full") and not isinstance(L, torch.Tensor):
        L = torch.as_tensor(L.full())
    if isinstance(L, np.ndarray):
        L = torch.as_tensor(L)
    check(
        isinstance(L, torch.Tensor),
        "L",
        L,
        "a (..., d², d²) tensor / array / qutip superoperator, or a Lindbladian",
    )
    check(L.ndim >= 2 and L.shape[-1] == L.shape[-2], "L", L, "a square (..., d², d²) matrix")
    check(L.shape[-1] >= 1 and L.numel() > 0, "L", L, "a non-empty (..., d², d²) matrix, d >= 1")
    d = round(L.shape[-1] ** 0.5)
    check(d * d == L.shape[-1], "L", L, "a size d² x d² (vectorised d x d density matrices)")
    check(
        bool(torch.isfinite(L).all()),
        "L",
        L,
        "finite entries (NaN or Inf would make every entry of rho NaN)",
    )
    if not L.is_complex():
        L = L.to(torch.complex128)
    return L


_S = 0.5**0.5

#: Scratch buffers of the dense path are reused (per thread) up to this many float64 entries
#: per buffer (4 MiB): fresh buffers of a few hundred KiB cost a page fault per 4 KiB on every
#: call, which measured more than the LU itself at d = 16.
_WORKSPACE_MAX = 1 << 19
_local = threading.local()


def _pair_indices(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vec indices ``P`` of ρ[i, j] and ``Q`` of ρ[j, i] for all i < j (column stacking)."""
    i, j = torch.triu_indices(d, d, offset=1)
    return j * d + i, i * d + j


@functools.lru_cache(maxsize=16)
def _basis_tables(
    d: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constants of :func:`_real_generator` for dimension d (cached, read-only).

    Returns ``(cZr, cZtr, cZi, cZti)``, each (d, d, d, d) indexed ``[i, a, j, b]`` like the
    Liouvillian's row ``i d + a`` and column ``j d + b``, and the vec indices ``(P, Q)``.
    """
    idx = torch.arange(d, device=device)
    i, a = idx[:, None], idx[None, :]
    q = (i < a).to(dtype)  # Q positions: x = √2 Im of the upper element (own vec entry: -√2 Im)
    nq = 1.0 - q
    diag = (i == a).to(dtype)
    u = diag + (1.0 - diag) * 2**0.5  # row scale (float64 arithmetic: no float32 scalars)
    v = 0.5 * diag + (1.0 - diag) * _S  # column scale
    qr, nqr, ur = (t[:, :, None, None] for t in (q, nq, u))
    qc, nqc, vc = (t[None, None, :, :] for t in (q, nq, v))
    uv = ur * vc
    tables = (
        uv * (nqr * nqc + qr * qc),
        uv * (nqr * nqc - qr * qc),
        uv * (nqr * qc - qr * nqc),
        -uv * (nqr * qc + qr * nqc),
    )
    P, Q = _pair_indices(d)
    a, b, c, e = (t.contiguous() for t in tables)
    return a, b, c, e, P.to(device), Q.to(device)


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
    """A reusable scratch tensor of this thread (fresh when larger than ``_WORKSPACE_MAX``)."""
    numel = math.prod(shape)
    if numel > _WORKSPACE_MAX or device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    cache = _local.__dict__.setdefault("buffers", {})
    key = (name, dtype)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = cache[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def _real_generator(Lb: Lindbladian, shape: tuple[int, ...]) -> torch.Tensor:
    """Augmented Lindbladian in the orthonormal Hermitian basis, as a real (B, d², d²) matrix.

    The basis is {E_kk, (E_ij + E_ji)/√2, i(E_ij - E_ji)/√2} (i < j), laid out on the vec grid:
    coordinate ``x[c]`` at vec index ``c`` of ρ[k, k] is ρ_kk, at that of an upper element ρ[i, j]
    it is √2 Re ρ_ij, at that of the lower ρ[j, i] it is √2 Im ρ_ij. ``A_r = Re(M A M^H)`` with
    ``M`` the unitary change of basis; a Lindbladian preserves Hermiticity, so ``M A M^H`` is real
    and nothing is dropped. Row 0 (ρ_00) is the trace row (``Tr ρ = Σ_k x_kk``).

    Assembled from ``(H, C, g)`` in real arithmetic without forming the complex ``d² x d²``
    Liouvillian: with ``X[i, j, a, b] = Σ_k g_k conj(C_k)[i, j] C_k[a, b]`` (two real matrix
    products of inner size 2K) plus the ``H_eff`` terms on two diagonals, the complex
    Liouvillian is ``Z[i, a, j, b] = X[i, j, a, b]`` and its column-transposed copy
    ``Zt[i, a, j, b] = X[i, b, a, j]`` (strided views of ``X``), and ``A_r`` is a fixed
    elementwise combination of their real and imaginary parts (:func:`_basis_tables`).

    Args:
        Lb: the Lindbladian (read without autograd).
        shape: its broadcast batch shape.

    Returns:
        (B, d², d²) real tensor, B = prod(shape), in this thread's reusable scratch buffer when
        small: the caller must be done with it before the next call.
    """
    H, C, g = Lb.H.detach(), Lb.C.detach(), Lb.rates.detach()
    d = H.shape[-1]
    n = d * d
    K = C.shape[-3]
    B = math.prod(shape)
    cdt = H.dtype
    rdt = H.real.dtype
    dev = H.device
    H = H.expand(*shape, d, d).reshape(B, d, d)
    C = C.expand(*shape, K, d, d).reshape(B, K, d, d)
    g = g.to(rdt).expand(*shape, K).reshape(B, K)
    Heff = H - 0.5j * (C.mH @ (g.to(cdt)[..., None, None] * C)).sum(1)
    Xr = _buffer("Xr", (B, n, n), rdt, dev)
    Xi = _buffer("Xi", (B, n, n), rdt, dev)
    if K:
        Cr, Ci = C.real.reshape(B, K, n), C.imag.reshape(B, K, n)
        gCr, gCi = g[..., None] * Cr, g[..., None] * Ci
        torch.matmul(torch.cat([gCr, gCi], 1).mT, torch.cat([Cr, Ci], 1), out=Xr)
        torch.matmul(torch.cat([gCr, -gCi], 1).mT, torch.cat([Ci, Cr], 1), out=Xi)
    else:
        Xr.zero_()
        Xi.zero_()
    Xr4, Xi4 = Xr.view(B, d, d, d, d), Xi.view(B, d, d, d, d)
    hr, hi = Heff.real[..., None], Heff.imag[..., None]
    # -i (I ⊗ H_eff): δ_ij H_eff[a, b];  i (conj(H_eff) ⊗ I): conj(H_eff)[i, j] δ_ab
    torch.diagonal(Xr4, dim1=1, dim2=2).add_(hi)
    torch.diagonal(Xi4, dim1=1, dim2=2).sub_(hr)
    torch.diagonal(Xr4, dim1=3, dim2=4).add_(hi)
    torch.diagonal(Xi4, dim1=3, dim2=4).add_(hr)
    cZr, cZtr, cZi, cZti, _, _ = _basis_tables(d, rdt, dev)
    out = _buffer("Ar", (B, n, n), rdt, dev)
    out4 = out.view(B, d, d, d, d)
    torch.mul(Xr4.permute(0, 1, 3, 2, 4), cZr, out=out4)
    out4.addcmul_(Xr4.permute(0, 1, 3, 4, 2), cZtr)
    out4.addcmul_(Xi4.permute(0, 1, 3, 2, 4), cZi)
    out4.addcmul_(Xi4.permute(0, 1, 3, 4, 2), cZti)
    out[:, 0, :] = 0.0
    out[:, 0, :: d + 1] = 1.0  # trace row
    return out


def _M(v: torch.Tensor, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    vp, vq = v[..., P], v[..., Q]
    v = v.clone()
    v[..., P] = (vp + vq) * _S
    v[..., Q] = 1j * (vq - vp) * _S
    return v


def _MH(u: torch.Tensor, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    up, uq = u[..., P], u[..., Q]
    u = u.clone()
    u[..., P] = (up + 1j * uq) * _S
    u[..., Q] = (up - 1j * uq) * _S
    return u


def _dense_solvers(
    Lb: Lindbladian, shape: tuple[int, ...], singular_tol: float
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """Dense LU of the augmented real generators of ``Lb``: (fwd, adj) acting on (B, n).

    A Lindbladian preserves Hermiticity, so in an orthonormal basis of Hermitian matrices the
    augmented matrix is real (``A = M^H A_r M``, ``M`` unitary and sparse, see
    :func:`_real_generator`): the LU is done in real arithmetic (about 4x fewer flops than
    complex). The factorisation is torch's (MKL/LAPACK on CPU), so it runs on the threads
    torch is set to use: scipy's bundled OpenBLAS spawns its own threads even for 9 x 9
    systems, which on a loaded machine made a solve ~10x slower.
    """
    d = Lb.dim
    Ar = _real_generator(Lb, shape)
    # LU of Ar^T: the row-major scratch read column-major, as LAPACK wants it (one plain copy
    # into the fresh factor, so a kept factorisation never aliases the scratch buffer)
    LU, piv, _ = torch.linalg.lu_factor_ex(Ar.mT)
    diags = torch.diagonal(LU, dim1=-2, dim2=-1).abs().cpu().numpy()
    for i, dg in enumerate(diags):
        check_pivots(dg, singular_tol, "steady_state" if len(diags) == 1 else f"steady_state[{i}]")
    *_, P, Q = _basis_tables(d, Ar.dtype, Ar.device)

    def lu_solve(r: torch.Tensor, adjoint: bool) -> torch.Tensor:
        u = _M(r, P, Q)
        cols = torch.stack([u.real, u.imag], dim=-1)  # (B, n, 2) real
        # Ar y = u  <=>  (Ar^T)^T y = u: the transposed solve of the factors of Ar^T
        y = torch.linalg.lu_solve(LU, piv, cols, adjoint=not adjoint)
        return _MH(torch.complex(y[..., 0], y[..., 1]), P, Q)

    def fwd(b: torch.Tensor) -> torch.Tensor:
        return lu_solve(b, False)

    def adj(g: torch.Tensor) -> torch.Tensor:
        return lu_solve(g, True)

    return fwd, adj


def _batch_solvers(
    mats: list[Any], d: int, method: str, opts: dict[str, Any]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """Per-batch-element scipy forward/adjoint solvers of the augmented systems.

    ``mats`` holds a scipy sparse ``L`` per batch element; ``fwd``/``adj`` act on (B, n).
    """
    fwds, adjs = [], []
    singular_tol = opts["singular_tol"]
    for i, Lb in enumerate(mats):
        what = "steady_state" if len(mats) == 1 else f"steady_state[batch {i}]"
        A = _augmented_scipy(Lb, d)
        if method == "krylov":
            s_f, s_a = krylov_solver(
                A, kind=opts["kind"], rtol=opts["rtol"], maxiter=opts["maxiter"], what=what
            )
        elif method == "evolve":  # adjoint by sparse LU, factorised only if a gradient is asked
            cache: dict[str, Any] = {}

            def s_a(r, A=A, cache=cache, what=what):
                if "lu" not in cache:
                    cache["lu"] = sparse_lu_solver(A, singular_tol=singular_tol, what=what)
                return cache["lu"][1](r)

            def s_f(r, Lb=Lb):
                return _evolve(Lb, d, opts["tol"], opts["max_doublings"], opts["dtype"])

            if opts["check_unique"]:
                cache["lu"] = sparse_lu_solver(A, singular_tol=singular_tol, what=what)
        else:
            s_f, s_a = sparse_lu_solver(A, singular_tol=singular_tol, what=what)

        def wrap(s):
            return lambda r: torch.as_tensor(s(r.detach().cpu().numpy()))

        fwds.append(wrap(s_f))
        adjs.append(wrap(s_a))

    def fwd(b: torch.Tensor) -> torch.Tensor:
        return torch.stack([f(b[i]) for i, f in enumerate(fwds)]).to(b.device, b.dtype)

    def adj(g: torch.Tensor) -> torch.Tensor:
        return torch.stack([a(g[i]) for i, a in enumerate(adjs)]).to(g.device, g.dtype)

    return fwd, adj


def steady_state(
    L: Lindbladian | torch.Tensor | Any,
    method: str = "auto",
    *,
    singular_tol: float = 1e-12,
    rtol: float = 1e-12,
    kind: str = "gmres",
    maxiter: int = 2000,
    tol: float | None = None,
    max_doublings: int = 200,
    check_unique: bool = True,
) -> torch.Tensor:
    """The unique steady state ρ_ss (``L ρ_ss = 0``, ``Tr ρ_ss = 1``), differentiable.

    Args:
        L: a :class:`~flowfields.quantum.Lindbladian` (from :func:`lindbladian`; gradients flow
            to its H, jump operators and rates through a matrix-free VJP, never forming a d⁴
            gradient), or a dense Liouvillian (..., d², d²) tensor / array / QuTiP
            superoperator in column stacking (gradient w.r.t. the matrix).
        method: ``"dense"``, ``"sparse"``, ``"krylov"`` or ``"evolve"`` (see module docs), or
            ``"auto"``: dense LU when d² <= AUTO_DENSE_MAX (256, measured faster there on one
            CPU thread), sparse LU above.
        singular_tol: LU pivot-ratio threshold for declaring the steady state non-unique.
        rtol, kind, maxiter: Krylov settings (``kind`` ``"gmres"`` or ``"bicgstab"``).
        tol, max_doublings: convergence of ``"evolve"`` (``||Lρ||_1 <= tol ||L||_1``, then
            polished while the residual still halves). ``tol=None`` follows the dtype of
            ``L``: 1e-13 for complex128, 1e-5 for complex64 (:func:`evolve_default_tol`).
        check_unique: for ``"evolve"``, factorise the augmented matrix (sparse LU) before
            evolving, so that a non-unique steady state raises ``SingularSystemError``
            instead of returning whichever steady state the maximally mixed start relaxes
            to; the factors are reused by the gradient. Default True; False skips the
            factorisation (then non-uniqueness is detected only when a gradient is taken).

    Returns:
        ρ_ss: (..., d, d) complex density matrix (trace one, Hermitian, positive
        semi-definite up to rounding).

    Raises:
        FlowfieldsError: bad input (non-finite entries anywhere in ``L``, an empty ``L``, bad
            shapes); ``SingularSystemError`` (a FlowfieldsError) when the steady state is not
            unique; for ``"evolve"``, a propagator that overflows or a residual that stalls
            above ``tol`` (each message says which, at which time).

    Accuracy: every method's error is absolute, of the order of rounding times ``||L||``:
    populations far below 1 are accurate only relative to the whole matrix. Measured on a
    thermal qubit with excited population 1e-12 (relative error of that population):
    sparse LU 2e-16, dense LU 9e-5, evolve 4e-16 with the polish (1e-2 when stopped at
    ``tol = 1e-13``, as before the polish).

    Example:
        >>> import torch
        >>> from flowfields.quantum import expect, lindbladian, steady_state
        >>> a = torch.diag(torch.arange(1, 4.0).sqrt(), 1).to(torch.complex128)
        >>> H = a.mH @ a + 0.3 * (a + a.mH)       # driven cavity, d = 4
        >>> kappa = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
        >>> rho = steady_state(lindbladian(H, [a], kappa), method="sparse")
        >>> expect(a.mH @ a, rho).backward()      # one adjoint solve
        >>> bool(kappa.grad < 0)                  # more loss, fewer photons
        True
    """
    check(
        method in (*STEADY_METHODS, "auto"), "method", method, f"'auto' or one of {STEADY_METHODS}"
    )
    L = _as_lindbladian_or_matrix(L)
    if method == "auto":
        n_sq = L.dim**2 if isinstance(L, Lindbladian) else L.shape[-1]
        method = "dense" if n_sq <= AUTO_DENSE_MAX else "sparse"
    if tol is None:
        tol = evolve_default_tol(L.H.dtype if isinstance(L, Lindbladian) else L.dtype)
    check(
        isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0,
        "tol",
        tol,
        "a positive float (or None for the dtype's default)",
    )
    opts = {
        "dtype": L.H.dtype if isinstance(L, Lindbladian) else L.dtype,
        "singular_tol": singular_tol,
        "rtol": rtol,
        "kind": kind,
        "maxiter": maxiter,
        "tol": tol,
        "max_doublings": max_doublings,
        "check_unique": check_unique,
    }
    if isinstance(L, torch.Tensor):
        return _steady_state_matrix(L, method, opts)
    return _steady_state_lindbladian(L, method, opts)


def _steady_state_matrix(L: torch.Tensor, method: str, opts: dict[str, Any]) -> torch.Tensor:
    """:func:`steady_state` of a dense (..., d², d²) Liouvillian (gradient w.r.t. the matrix)."""
    n = L.shape[-1]
    d = round(n**0.5)
    w = _trace_row(d, L.dtype, L.device)
    b = torch.zeros(L.shape[:-1], dtype=L.dtype, device=L.device)
    b[..., 0] = 1.0
    if method in ("dense", "sparse", "krylov"):
        A = replace_row(L, 0, w)
        x = linear_solve(
            A,
            b,
            method=method,
            singular_tol=opts["singular_tol"],
            rtol=opts["rtol"],
            kind=opts["kind"],
            maxiter=opts["maxiter"],
        )
        return unvec(x)
    Lf = L.reshape(-1, n, n)
    mats = [sp.csr_matrix(Lf[i].detach().cpu().numpy()) for i in range(Lf.shape[0])]
    fwd, adj = _batch_solvers(mats, d, method, opts)

    def apply_A_mat(x: torch.Tensor, Lp: torch.Tensor) -> torch.Tensor:
        return (replace_row(Lp, 0, w) @ x.reshape(*Lp.shape[:-1], 1)).squeeze(-1)

    x = implicit_linear_solve(
        lambda x, Lp: apply_A_mat(x.reshape(L.shape[:-1]), Lp),
        (L,),
        b,
        solve_forward=lambda bb: fwd(bb.reshape(-1, n)).reshape(bb.shape),
        solve_adjoint=lambda g: adj(g.reshape(-1, n)).reshape(g.shape),
    )
    return unvec(x)


def _steady_state_lindbladian(L: Lindbladian, method: str, opts: dict[str, Any]) -> torch.Tensor:
    """:func:`steady_state` of a :class:`Lindbladian`: matrix-free VJP through (H, C, rates)."""
    d = L.dim
    n = d * d
    shape = L.batch_shape
    dtype = L.H.dtype
    b = torch.zeros(*shape, n, dtype=dtype, device=L.H.device)
    b[..., 0] = 1.0
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (L.H, L.C, L.rates))
    if method == "dense":
        with torch.no_grad():
            fwd, adj = _dense_solvers(L, shape, opts["singular_tol"])
    else:
        idx = list(np.ndindex(*shape)) if shape else [()]
        fwd, adj = _batch_solvers([L.scipy(i) for i in idx], d, method, opts)
    if not needs_grad:  # no graph to record: the forward solve alone
        return unvec(fwd(b.reshape(-1, n)).reshape(b.shape))
    w = _trace_row(d, dtype, L.H.device)

    def apply_A(x: torch.Tensor, H: torch.Tensor, C: torch.Tensor, g: torch.Tensor):
        y = vec(Lindbladian(H, C, g).apply(unvec(x)))
        head = (w * x).sum(-1, keepdim=True)
        return torch.cat([head, y[..., 1:]], dim=-1)

    x = implicit_linear_solve(
        apply_A,
        (L.H, L.C, L.rates),
        b,
        solve_forward=lambda bb: fwd(bb.reshape(-1, n)).reshape(bb.shape),
        solve_adjoint=lambda g: adj(g.reshape(-1, n)).reshape(g.shape),
    )
    return unvec(x)
