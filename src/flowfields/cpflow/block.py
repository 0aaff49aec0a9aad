"""One convex potential flow block ``f(x) = ∇F(x)`` and its inverse by convex optimisation.

Huang, Chen, Tsirigotis, Courville, "Convex Potential Flows: Universal Probability
Distributions with Optimal Transport and Convex Optimization" (ICLR 2021, arXiv:2012.05942).

``F(x) = softplus(β1) G(x) + softplus(β0) |x|^2 / 2`` with ``G`` an :class:`~flowfields.nn.ICNN`,
so ``F`` is ``α``-strongly convex with ``α = softplus(β0)``: the Jacobian of ``f`` is the Hessian
``∇²F`` (symmetric, every eigenvalue >= α), ``f`` is a bijection of R^d, ``log |det Df| =
log det ∇²F``, and (Brenier) ``f`` is the quadratic-cost optimal transport map from any
distribution to its push-forward. The inverse is the gradient of the convex conjugate:
``f^{-1}(y) = argmin_x F(x) - <x, y>`` (:meth:`ConvexPotentialBlock.inverse`, a batched
Newton method with CG inner solves and a backtracking line search).

Hessian-vector products (CG, SLQ, the inverse's Newton steps) come from the same closed-form
sweeps by default: hand-written because they are measurably faster than autograd through
the gradient's graph (2-3x per product, ``docs/cpflow.md``) and checked against it in float64.

Log-determinants (:meth:`ConvexPotentialBlock.forward_logdet`):

- ``"exact"``: the Hessian in closed form (a forward sweep of per-layer Jacobians and a
  backward sweep of adjoints, :mod:`flowfields.nn.convex_sweep`; or nested autograd with
  ``hessian_mode="loop"/"vmap"``) and a Cholesky factor (differentiable; ``O(d^3)``): small
  ``d``;
- ``"slq"``: stochastic Lanczos quadrature (:func:`flowfields.linalg.slq_logdet`), evaluation at
  large ``d`` (no gradient);
- ``"surrogate"``: the CG surrogate (:func:`flowfields.linalg.logdet_surrogate`) whose gradient
  is unbiased for ``∇_θ log det ∇²F``; its value is ``≈ d``, *not* a log-determinant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfields.density import check_points, weights_dtype
from flowfields.errors import check
from flowfields.linalg import conjugate_gradient, logdet_surrogate, rademacher, slq_logdet
from flowfields.nn import ICNN, PICNN, ActNorm
from flowfields.nn.convex_sweep import ConvexSweep

__all__ = ["HESSIAN_MODES", "LOGDET_METHODS", "ConvexPotentialBlock", "InverseResult"]

#: Log-determinant methods of :meth:`ConvexPotentialBlock.forward_logdet`.
LOGDET_METHODS = ("exact", "slq", "surrogate")

#: How :meth:`ConvexPotentialBlock.hessian` forms ``∇²F``.
HESSIAN_MODES = ("auto", "analytic", "loop", "vmap")


@dataclass
class InverseResult:
    """Output of :meth:`ConvexPotentialBlock.inverse`.

    Attributes:
        x: the solutions ``f^{-1}(y)``, (B, d).
        iterations: Newton iterations per row, (B,).
        residual: ``max_i |∇F(x)_i - y_i|`` per row, (B,) (the error in ``x`` is at most
            ``|residual|_2 / α``).
        converged: ``residual <= tol`` per row, (B,) bool.
        hvps: Hessian-vector products used in total (CG steps summed over iterations).
    """

    x: Tensor
    iterations: Tensor
    residual: Tensor
    converged: Tensor
    hvps: int


def _inverse_sp(value: float) -> float:
    """``softplus^{-1}(value)`` for value > 0."""
    return float(torch.log(torch.expm1(torch.tensor(value, dtype=torch.float64))))


class ConvexPotentialBlock(nn.Module):
    """``f(x) = ∇F(x)``, ``F = softplus(β1) G + softplus(β0) |x|²/2`` (see the module docs).

    Args:
        dim: dimension ``d``.
        hidden, depth, activation, augment, actnorm: the :class:`~flowfields.nn.ICNN` ``G``.
        alpha_init: initial ``α = softplus(β0)`` (the quadratic's weight).
        gain_init: initial ``softplus(β1)`` (the ICNN's weight).
        context_dim: if given, ``G(x, c)`` is a :class:`~flowfields.nn.PICNN` (convex in ``x``
            for every context ``c``): a conditional block; every method then takes
            ``context`` of shape (B, context_dim).
        hessian_mode: how the exact Hessian is formed: ``"analytic"`` (closed form, one
            forward and one backward sweep over the network carrying each layer's Jacobian:
            :meth:`flowfields.nn.ICNN.derivatives`; first-order autograd for the θ-gradient),
            ``"loop"`` (d Hessian-vector products through the gradient's graph), ``"vmap"``
            (``torch.func.vmap(jacrev(grad F))``), ``"auto"`` (= ``"analytic"``, the fastest
            measured at every d of ``docs/cpflow.md``'s profile).

    Shapes:
        forward (B, d) -> (B, d); potential (B, d) -> (B,).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 3,
        activation: str = "softplus",
        *,
        augment: bool = True,
        actnorm: bool = True,
        alpha_init: float = 1.0,
        gain_init: float = 1.0,
        context_dim: int | None = None,
        hessian_mode: str = "auto",
    ) -> None:
        super().__init__()
        check(
            hessian_mode in HESSIAN_MODES,
            "hessian_mode",
            hessian_mode,
            f"one of {', '.join(HESSIAN_MODES)}",
        )
        self.hessian_mode = hessian_mode
        check(alpha_init > 0, "alpha_init", alpha_init, "a float > 0")
        check(gain_init > 0, "gain_init", gain_init, "a float > 0")
        self.dim = dim
        self.context_dim = context_dim
        self.icnn: nn.Module = (
            ICNN(dim, hidden, depth, activation, augment=augment, actnorm=actnorm)
            if context_dim is None
            else PICNN(dim, context_dim, hidden, depth, activation, actnorm=actnorm)
        )
        self.beta0 = nn.Parameter(torch.tensor(_inverse_sp(alpha_init)))
        self.beta1 = nn.Parameter(torch.tensor(_inverse_sp(gain_init)))

    @property
    def alpha(self) -> Tensor:
        """The strong-convexity modulus ``softplus(β0)``: every Hessian eigenvalue is >= it."""
        return F.softplus(self.beta0)

    def _check_context(self, context: Tensor | None) -> None:
        """A conditional block needs a context, an unconditional one refuses it."""
        check(
            (context is None) == (self.context_dim is None),
            "context",
            context,
            "None (unconditional block)"
            if self.context_dim is None
            else f"a tensor of shape (B, {self.context_dim}) (conditional block)",
        )

    def potential(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``F(x)`` (or ``F(x; c)`` for a conditional block), (B, d) -> (B,)."""
        self._check_context(context)
        G = self.icnn(x) if context is None else self.icnn(x, context)
        return F.softplus(self.beta1) * G + 0.5 * self.alpha * (x * x).sum(-1)

    def _graph(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x_, ∇F(x_))`` with a graph from which Hessian-vector products are taken."""
        x_ = x if x.requires_grad else x.detach().requires_grad_(True)
        with torch.enable_grad():
            F_ = self.potential(x_, context).sum()
            (g,) = torch.autograd.grad(F_, x_, create_graph=True)
        return x_, g

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``f(x) = ∇F(x)`` (differentiable when grad mode is on), (B, d) -> (B, d)."""
        keep = torch.is_grad_enabled()
        _, g = self._graph(x, context)
        return g if keep else g.detach()

    @staticmethod
    def _hvp(x_: Tensor, g: Tensor) -> Callable[[Tensor, bool], Tensor]:
        def hvp(u: Tensor, create_graph: bool) -> Tensor:
            with torch.enable_grad():
                (Hu,) = torch.autograd.grad(g, x_, u, retain_graph=True, create_graph=create_graph)
            return Hu

        return hvp

    def hessian(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``∇²F(x)`` (formed as ``hessian_mode`` says), (B, d) -> (B, d, d)."""
        if self._mode() == "analytic":
            return self.closed_form(x, context)[2]
        keep = torch.is_grad_enabled()
        x_, g = self._graph(x, context)
        return self._hessian(x_, g, keep, context)

    def _mode(self) -> str:
        return "analytic" if self.hessian_mode == "auto" else self.hessian_mode

    def _sweep(self, x: Tensor, context: Tensor | None) -> ConvexSweep:
        self._check_context(context)
        net = self.icnn
        if isinstance(net, ICNN):
            return net.sweep(x)
        assert isinstance(net, PICNN) and context is not None
        return net.sweep(x, context)

    def closed_form(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(F(x), ∇F(x), ∇²F(x))`` from the network's closed-form derivative sweeps
        (:class:`flowfields.nn.convex_sweep.ConvexSweep`), differentiable in ``x`` and θ by
        first-order autograd; (B,), (B, d), (B, d, d)."""
        sw = self._sweep(x, context)
        gain, alpha = F.softplus(self.beta1), self.alpha
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        Fx = gain * sw.value + 0.5 * alpha * (x * x).sum(-1)
        return Fx, gain * sw.grad + alpha * x, gain * sw.hessian() + alpha * eye

    def _operator(
        self, x: Tensor, context: Tensor | None
    ) -> tuple[Tensor, Callable[[Tensor, bool], Tensor]]:
        """``(∇F(x), hvp)`` with ``hvp(u, create_graph) = ∇²F(x) u``: closed-form sweeps in
        ``"analytic"`` mode, otherwise autograd through the gradient's graph."""
        if self._mode() != "analytic":
            x_, g = self._graph(x, context)
            return g, self._hvp(x_, g)
        sw = self._sweep(x, context)
        gain, alpha = F.softplus(self.beta1), self.alpha
        g = gain * sw.grad + alpha * x

        def hvp(u: Tensor, create_graph: bool) -> Tensor:
            with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
                return gain * sw.hvp(u) + alpha * u

        return g, hvp

    def _hessian(
        self, x_: Tensor, g: Tensor, create_graph: bool, context: Tensor | None = None
    ) -> Tensor:
        mode = self._mode()
        if mode == "loop":  # d reverse passes through the gradient's graph
            hvp = self._hvp(x_, g)
            eye = torch.eye(self.dim, dtype=x_.dtype, device=x_.device)
            cols = [hvp(eye[i].expand_as(x_), create_graph) for i in range(self.dim)]
            return torch.stack(cols, -1)
        self._initialize_norms(x_, context)
        with torch.set_grad_enabled(create_graph):
            if context is None:

                def F0(z: Tensor) -> Tensor:
                    return self.potential(z[None])[0]

                return torch.func.vmap(torch.func.jacrev(torch.func.grad(F0)))(x_)

            def F1(z: Tensor, c: Tensor) -> Tensor:
                return self.potential(z[None], c[None])[0]

            return torch.func.vmap(torch.func.jacrev(torch.func.grad(F1)))(x_, context)

    def _initialize_norms(self, x: Tensor, context: Tensor | None) -> None:
        """Data-initialise the ICNN's ActNorms with a plain batched pass (not under vmap)."""
        if self.training and any(
            isinstance(m, ActNorm) and not bool(m.initialized) for m in self.modules()
        ):
            with torch.no_grad():
                self.potential(x.detach(), context)

    def forward_logdet(
        self,
        x: Tensor,
        method: str = "exact",
        *,
        n_probes: int = 1,
        lanczos_steps: int | None = None,
        cg_tol: float = 1e-6,
        cg_max_iter: int = 100,
        generator: torch.Generator | None = None,
        context: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(f(x), ld)``: the map and a log-determinant term, each per row.

        Args:
            x: points, (B, d).
            method: ``"exact"`` (``log det ∇²F``), ``"slq"`` (its SLQ estimate, averaged over
                ``n_probes`` Rademacher probes, ``lanczos_steps`` steps, default ``min(d, 20)``;
                no gradient) or ``"surrogate"`` (gradient-only, value ≈ d; ``cg_tol``,
                ``cg_max_iter``).
            generator: for the probes.
            context: (B, context_dim) for a conditional block.

        Returns:
            ``y`` (B, d) and ``ld`` (B,). Both carry gradients when grad mode is on (``slq``'s
            ``ld`` never does).
        """
        check(method in LOGDET_METHODS, "method", method, f"one of {', '.join(LOGDET_METHODS)}")
        check(
            isinstance(x, Tensor) and x.ndim == 2 and x.shape[1] == self.dim,
            "x",
            x,
            f"a tensor of shape (B, {self.dim})",
        )
        keep = torch.is_grad_enabled()
        if method == "exact" and self._mode() == "analytic":
            _, g, H = self.closed_form(x, context)
            L = torch.linalg.cholesky(H)
            ld = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
            return (g, ld) if keep else (g.detach(), ld.detach())
        if method == "exact":
            x_, g = self._graph(x, context)
            H = self._hessian(x_, g, keep, context)
            L = torch.linalg.cholesky(H)
            ld = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
            return (g, ld) if keep else (g.detach(), ld.detach())
        g, hvp = self._operator(x, context)
        if method == "slq":
            m = lanczos_steps or min(self.dim, 20)
            ests = [
                slq_logdet(
                    lambda u: hvp(u, False), rademacher(x.shape, like=x, generator=generator), m
                )
                for _ in range(n_probes)
            ]
            ld = torch.stack(ests).mean(0)
        else:
            v = rademacher(x.shape, like=x, generator=generator)
            ld, _ = logdet_surrogate(hvp, v, tol=cg_tol, max_iter=cg_max_iter)
        return (g, ld) if keep else (g.detach(), ld.detach())

    def inverse(
        self,
        y: Tensor,
        *,
        tol: float | None = None,
        max_iter: int = 50,
        x0: Tensor | None = None,
        context: Tensor | None = None,
    ) -> InverseResult:
        """``f^{-1}(y) = argmin_x F(x) - <x, y>`` by a batched damped Newton method.

        Each iteration solves ``∇²F(x) p = -(∇F(x) - y)`` by CG (Hessian-vector products only,
        to relative tolerance ``1e-10``, at most ``2d`` steps) and backtracks on the convex
        objective (Armijo, halving) per row; rows stop once ``max_i |∇F(x)_i - y_i| <= tol``.
        No gradient flows through the solve.

        Args:
            y: points, (B, d).
            tol: residual tolerance, default ``1e-10`` (float64) / ``1e-4`` (float32).
            max_iter: Newton iterations, >= 1.
            x0: start (default ``y``).
            context: (B, context_dim) for a conditional block.
        """
        check_points(y, (self.dim,), "y", dtype=weights_dtype(self))
        check(
            isinstance(max_iter, int) and not isinstance(max_iter, bool) and max_iter >= 1,
            "max_iter",
            max_iter,
            "an integer >= 1",
        )
        tol = (1e-10 if y.dtype == torch.float64 else 1e-4) if tol is None else tol
        check(isinstance(tol, (int, float)) and tol > 0, "tol", tol, "a float > 0")
        x = (y if x0 is None else x0).detach().clone()
        y = y.detach()
        B = y.shape[0]
        iters = torch.zeros(B, dtype=torch.long, device=y.device)
        res = torch.full((B,), float("inf"), dtype=y.dtype, device=y.device)
        hvps = 0
        eps = torch.finfo(y.dtype).eps
        for _ in range(max_iter + 1):
            with torch.no_grad():
                g, hvp = self._operator(x, context)
            r = (g - y).detach()
            res = r.abs().amax(-1)
            active = res > tol
            if not bool(active.any()) or int(iters.max()) >= max_iter:
                break

            def matvec(u: Tensor, hvp: Callable[[Tensor, bool], Tensor] = hvp) -> Tensor:
                return hvp(u, False)

            cg = conjugate_gradient(matvec, -r, tol=1e-10, max_iter=2 * self.dim)
            hvps += int(cg.iterations.max())
            p = torch.where(active[:, None], cg.x, 0.0)
            x = self._line_search(x, y, p, r, active, eps, context)
            iters += active.long()
        return InverseResult(x.detach(), iters, res.detach(), res <= tol, hvps)

    @torch.no_grad()
    def _line_search(
        self,
        x: Tensor,
        y: Tensor,
        p: Tensor,
        r: Tensor,
        active: Tensor,
        eps: float,
        context: Tensor | None,
    ) -> Tensor:
        phi0 = self.potential(x, context) - (x * y).sum(-1)
        slope = (r * p).sum(-1)  # < 0: p is a descent direction
        t = torch.ones_like(phi0)
        todo = active.clone()
        slack = 10 * eps * phi0.abs().clamp_min(1.0)
        for _ in range(30):
            xt = x + t[:, None] * p
            phi = self.potential(xt, context) - (xt * y).sum(-1)
            ok = phi <= phi0 + 1e-4 * t * slope + slack
            todo = todo & ~ok
            if not bool(todo.any()):
                break
            t = torch.where(todo, 0.5 * t, t)
        return torch.where(active[:, None], x + t[:, None] * p, x)
