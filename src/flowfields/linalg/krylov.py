"""Matrix-free Krylov methods over batches of SPD operators: CG, Lanczos, SLQ log-det, and the
conjugate-gradient surrogate of ``∇_θ log det H(θ)``.

Every function takes an operator ``matvec(v) -> H v`` acting on a batch: ``v`` of shape
``(B, d)`` holds one vector per system and ``H`` is block diagonal (one SPD ``d x d`` matrix
per row: e.g. the Hessians of a convex potential at ``B`` points, applied by Hessian-vector
products). Iterations stop per row; finished rows are frozen.

- :func:`conjugate_gradient`: solves ``H x = b`` to ``|H x - b| <= tol |b|`` (per row) or
  ``max_iter`` iterations; returns :class:`CGResult` with the iteration count of each row.
- :func:`lanczos`: ``m`` steps with full re-orthogonalisation, the tridiagonal ``T``.
- :func:`slq_logdet`: stochastic Lanczos quadrature (Ubaru, Chen, Saad 2017):
  ``log det H = E_v[v^T log(H) v] ≈ |v|^2 Σ_k τ_k^2 log θ_k`` with ``(θ_k, τ_k)`` the
  eigenvalues and first eigenvector components of ``T`` (exact for one probe when ``m = d``).
- :func:`logdet_surrogate`: with ``w = H^{-1} v`` solved by CG *outside* autograd, the scalar
  ``stopgrad(w)^T H(θ) v`` has gradient ``v^T H^{-1} (∂H) v``, whose mean over Rademacher
  probes is ``tr(H^{-1} ∂H) = ∂ log det H`` (Huang et al., "Convex Potential Flows",
  arXiv:2012.05942, section 4). Its *value* is ``v^T v ≈ d`` (not a log-determinant). The
  memory kept for backward is one Hessian-vector product, whatever the number of CG steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check, check_finite

__all__ = [
    "CGResult",
    "LanczosResult",
    "conjugate_gradient",
    "lanczos",
    "logdet_surrogate",
    "rademacher",
    "slq_logdet",
]

MatVec = Callable[[Tensor], Tensor]


@dataclass
class CGResult:
    """Output of :func:`conjugate_gradient`.

    Attributes:
        x: solutions, (B, d).
        iterations: CG iterations each row took, (B,) int64.
        residual_norm: ``|H x - b|`` per row (recursive residual), (B,).
        converged: ``residual_norm <= tol |b|`` per row, (B,) bool.
    """

    x: Tensor
    iterations: Tensor
    residual_norm: Tensor
    converged: Tensor


@dataclass
class LanczosResult:
    """Output of :func:`lanczos`: ``Q^T H Q = T`` with ``T`` tridiagonal.

    Attributes:
        alpha: diagonal of ``T``, (B, m).
        beta: off-diagonal of ``T``, (B, m - 1).
        Q: the orthonormal Lanczos vectors, (B, m, d).
    """

    alpha: Tensor
    beta: Tensor
    Q: Tensor

    def tridiagonal(self) -> Tensor:
        """``T`` as dense matrices, (B, m, m)."""
        T = torch.diag_embed(self.alpha)
        return T + torch.diag_embed(self.beta, 1) + torch.diag_embed(self.beta, -1)


def rademacher(shape: tuple[int, ...], *, like: Tensor, generator: torch.Generator | None = None):
    """Random ±1 entries of ``shape`` in ``like``'s dtype and device (drawn on the CPU when a
    CPU ``generator`` is given, so draws are reproducible across devices)."""
    dev = generator.device if generator is not None else like.device
    bits = torch.randint(0, 2, shape, generator=generator, device=dev)
    return (2 * bits - 1).to(dtype=like.dtype, device=like.device)


def _check_batch(b: object, name: str) -> None:
    check(
        isinstance(b, Tensor) and b.ndim == 2 and b.is_floating_point(),
        name,
        b,
        "a floating tensor of shape (B, d): one vector per system",
    )
    assert isinstance(b, Tensor)
    check_finite(b, name)


def _check_tol(tol: float, max_iter: int) -> None:
    check(isinstance(tol, (int, float)) and tol > 0, "tol", tol, "a float > 0")
    check(
        isinstance(max_iter, int) and not isinstance(max_iter, bool) and max_iter >= 1,
        "max_iter",
        max_iter,
        "an integer >= 1",
    )


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def conjugate_gradient(
    matvec: MatVec,
    b: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    x0: Tensor | None = None,
    differentiable: bool = False,
) -> CGResult:
    """Solve ``H x = b`` for each row by conjugate gradients (``H`` SPD, applied by ``matvec``).

    Runs without autograd by default (nothing is recorded); ``differentiable=True`` records
    every iteration (backpropagation through CG: memory grows with the iterations -- the
    baseline :func:`logdet_surrogate` avoids; to differentiate a solve cheaply use
    :func:`flowfields.linalg.implicit_linear_solve`).

    Args:
        matvec: ``v (B, d) -> H v (B, d)``.
        b: right-hand sides, (B, d).
        tol: relative residual tolerance ``|r| <= tol |b|``, > 0.
        max_iter: iteration cap, >= 1.
        x0: starting point (default zeros).
        differentiable: record the iterations for autograd.

    Returns:
        :class:`CGResult`.

    Raises:
        FlowfieldsError: a non-positive ``tol`` or ``max_iter``, a badly shaped or non-finite
            ``b``.
    """
    _check_batch(b, "b")
    _check_tol(tol, max_iter)
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        r = b - matvec(x) if x0 is not None else b.clone()
        p = r.clone()
        rr = _dot(r, r)
        target = (tol * b.norm(dim=-1)) ** 2
        iters = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
        for _ in range(max_iter):
            active = rr > target
            if not bool(active.any()):
                break
            Hp = matvec(p)
            pHp = _dot(p, Hp)
            alpha = torch.where(active, rr / torch.where(active, pHp, 1.0), 0.0)
            x = x + alpha[:, None] * p
            r = r - alpha[:, None] * Hp
            rr_new = _dot(r, r)
            beta = torch.where(active, rr_new / torch.where(active, rr, 1.0), 0.0)
            p = torch.where(active[:, None], r + beta[:, None] * p, p)
            rr = torch.where(active, rr_new, rr)
            iters += active.long()
        return CGResult(x, iters, rr.sqrt(), rr <= target)


def lanczos(matvec: MatVec, v: Tensor, m: int, *, reorthogonalize: bool = True) -> LanczosResult:
    """``m`` Lanczos steps from ``v`` (per row), with full re-orthogonalisation by default.

    A row whose Krylov space is exhausted before ``m`` steps (``beta ≈ 0``: an invariant
    subspace was found) gets zero ``beta`` and further vectors orthogonal to the previous ones
    drawn from a fixed basis, so ``T`` stays exact for the quadrature.

    Args:
        matvec: ``v (B, d) -> H v (B, d)`` (``H`` symmetric).
        v: starting vectors, (B, d) (normalised here).
        m: number of steps, 1 <= m <= d.

    Returns:
        :class:`LanczosResult` (alpha (B, m), beta (B, m - 1), Q (B, m, d)).
    """
    _check_batch(v, "v")
    d = v.shape[1]
    check(
        isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= d,
        "m",
        m,
        f"an integer in [1, d = {d}]",
    )
    eps = torch.finfo(v.dtype).eps
    q = v / v.norm(dim=-1, keepdim=True)
    Q = [q]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    for j in range(m):
        w = matvec(Q[j])
        a = _dot(w, Q[j])
        alphas.append(a)
        if j == m - 1:
            break
        w = w - a[:, None] * Q[j] - (betas[-1][:, None] * Q[j - 1] if j > 0 else 0.0)
        if reorthogonalize:
            Qs = torch.stack(Q, 1)  # (B, j+1, d)
            for _ in range(2):
                w = w - torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", Qs, w), Qs)
        bnorm = w.norm(dim=-1)
        breakdown = bnorm <= 1e3 * eps * alphas[0].abs().clamp_min(1.0)
        betas.append(torch.where(breakdown, 0.0, bnorm))
        q_next = w / torch.where(breakdown, 1.0, bnorm)[:, None]
        if bool(breakdown.any()):
            q_next = torch.where(breakdown[:, None], _fresh_direction(Q, j + 1, v), q_next)
        Q.append(q_next)
    alpha = torch.stack(alphas, 1)
    beta = torch.stack(betas, 1) if betas else alpha.new_zeros(v.shape[0], 0)
    return LanczosResult(alpha, beta, torch.stack(Q, 1))


def _fresh_direction(Q: list[Tensor], j: int, v: Tensor) -> Tensor:
    """A unit vector orthogonal to ``Q[0..j-1]`` (per row), from the standard basis."""
    Qs = torch.stack(Q, 1)
    best = None
    for i in range(v.shape[1]):
        e = torch.zeros_like(v)
        e[:, i] = 1.0
        e = e - torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", Qs, e), Qs)
        if best is None:
            best = e
        else:
            better = e.norm(dim=-1) > best.norm(dim=-1)
            best = torch.where(better[:, None], e, best)
    assert best is not None
    return best / best.norm(dim=-1, keepdim=True)


def slq_logdet(matvec: MatVec, v: Tensor, m: int) -> Tensor:
    """Stochastic Lanczos quadrature estimate of ``log det H`` from one probe per row.

    ``|v|^2 Σ_k τ_k^2 log θ_k`` with ``(θ_k, τ_k)`` from the eigen-decomposition of the
    ``m``-step Lanczos matrix started at ``v``: unbiased for Rademacher (or Gaussian) ``v`` up
    to the quadrature error, which vanishes at ``m = d``. Average several calls to reduce the
    variance.

    Args:
        matvec: ``(B, d) -> (B, d)``, ``H`` SPD.
        v: probes, (B, d) (e.g. :func:`rademacher`).
        m: Lanczos steps, 1 <= m <= d.

    Returns:
        estimates, (B,).
    """
    with torch.no_grad():
        res = lanczos(matvec, v, m)
        theta, U = torch.linalg.eigh(res.tridiagonal())
        tau2 = U[:, 0, :] ** 2
        log_theta = torch.log(theta.clamp_min(torch.finfo(theta.dtype).tiny))
        return _dot(v, v) * (tau2 * log_theta).sum(-1)


def logdet_surrogate(
    hvp: Callable[[Tensor, bool], Tensor],
    v: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> tuple[Tensor, CGResult]:
    """The CG surrogate whose gradient is an unbiased estimate of ``∇_θ log det H(θ)``.

    Solves ``w = H^{-1} v`` by :func:`conjugate_gradient` with ``hvp(u, False)`` (no graph),
    then returns ``stopgrad(w) · hvp(v, True)`` per row. Only the last Hessian-vector product
    is recorded by autograd, so backward memory does not grow with the CG iterations.

    Args:
        hvp: ``(u (B, d), create_graph) -> H u (B, d)``; with ``create_graph=True`` the product
            must be differentiable in the parameters θ.
        v: probes, (B, d) (Rademacher for the lowest variance).
        tol, max_iter: CG settings (unbiased when CG converges).

    Returns:
        ``(surrogate (B,), cg)``: the surrogate's value is ``v·v`` up to the CG error (``d``
        for Rademacher probes) -- never log it as a log-likelihood term.
    """
    cg = conjugate_gradient(lambda u: hvp(u, False), v, tol=tol, max_iter=max_iter)
    return _dot(cg.x.detach(), hvp(v, True)), cg
