"""Input-convex networks: :class:`ICNN`, :class:`PICNN`, :class:`PositiveLinear`, :class:`ActNorm`.

Huang, Chen, Tsirigotis, Courville, "Convex Potential Flows: Universal Probability
Distributions with Optimal Transport and Convex Optimization" (ICLR 2021, arXiv:2012.05942),
after Amos, Xu, Kolter, "Input Convex Neural Networks" (ICML 2017, arXiv:1609.07152).

A scalar network ``G(x)`` is convex in ``x`` when every hidden unit is a convex function of
``x``: the first layer is affine in ``x`` followed by a convex activation; every later layer is
``act(W⁺ z + A x + b)`` with ``W⁺ >= 0`` (non-negative weights on the hidden path, here
``W⁺ = softplus(V)``) and ``act`` convex and non-decreasing (a non-negative combination of
convex functions plus an affine one is convex; a convex non-decreasing function of a convex
function is convex). :class:`ActNorm` with a positive scale keeps that property (a positive
multiple of a convex function plus a constant).

Activations (:data:`CONVEX_ACTIVATIONS`): ``softplus`` (``log(1 + e^x)``) and
``gaussian_softplus`` (``x Φ(x) + φ(x)``, the integral of the Gaussian CDF: smooth, convex,
non-decreasing, second derivative ``φ(x) > 0`` everywhere, tails like ReLU).

Example:
    >>> import torch
    >>> from flowfields.nn import ICNN
    >>> G = ICNN(2, hidden=8, depth=2)
    >>> G(torch.randn(5, 2)).shape
    torch.Size([5])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfields.errors import FlowfieldsError, check
from flowfields.nn.convex_sweep import ConvexSweep, SweepLayer

__all__ = [
    "CONVEX_ACTIVATIONS",
    "ICNN",
    "PICNN",
    "ActNorm",
    "PositiveLinear",
    "convex_activation",
    "gaussian_softplus",
]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gaussian_softplus(x: Tensor) -> Tensor:
    """``x Φ(x) + φ(x)`` (Φ, φ the standard normal CDF and density), elementwise.

    Convex and non-decreasing: its derivative is ``Φ(x)`` in (0, 1), its second derivative
    ``φ(x) > 0``. It equals ``E[max(x + ε, 0)]`` for ``ε ~ N(0, 1)``: a smoothed ReLU.
    """
    return 0.5 * x * (1.0 + torch.erf(x / _SQRT2)) + _INV_SQRT_2PI * torch.exp(-0.5 * x * x)


#: Convex, non-decreasing, smooth activations allowed after an ICNN's first layer, by name.
CONVEX_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "softplus": F.softplus,
    "gaussian_softplus": gaussian_softplus,
}


def _activation_derivatives(name: str, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(act(a), act'(a), act''(a))`` for a key of :data:`CONVEX_ACTIVATIONS`."""
    if name == "softplus":
        # F.softplus is the identity above its threshold 20; its derivatives follow suit
        # (1 and 0 there), so the closed form is the derivative of the function computed
        s = torch.sigmoid(a)
        linear = a > 20.0
        d1 = torch.where(linear, torch.ones_like(s), s)
        return F.softplus(a), d1, torch.where(linear, torch.zeros_like(s), s * (1.0 - s))
    cdf = 0.5 * (1.0 + torch.erf(a / _SQRT2))
    pdf = _INV_SQRT_2PI * torch.exp(-0.5 * a * a)
    return a * cdf + pdf, cdf, pdf


def _weight(m: nn.Module) -> Tensor:
    """A linear layer's weight matrix (typed, for modules held in an ``nn.ModuleList``)."""
    w = m.weight
    assert isinstance(w, Tensor)
    return w


def convex_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The convex non-decreasing activation called ``name`` (a key of
    :data:`CONVEX_ACTIVATIONS`).

    Raises:
        FlowfieldsError: for any other name (``tanh``, ``silu``, ``relu``: not convex, not
            monotone, or without second derivatives).
    """
    if not isinstance(name, str) or name not in CONVEX_ACTIVATIONS:
        raise FlowfieldsError(
            f"activation: got {name!r}, expected one of {', '.join(CONVEX_ACTIVATIONS)} "
            "(an ICNN needs convex, non-decreasing activations with second derivatives)."
        )
    return CONVEX_ACTIVATIONS[name]


def _check_size(value: object, name: str, low: int = 1) -> None:
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= low,
        name,
        value,
        f"an integer >= {low}",
    )


class PositiveLinear(nn.Module):
    """A linear layer with non-negative weights ``softplus(V) / n_in``: ``y = W⁺ x + b``.

    The softplus reparameterisation keeps ``W⁺ > 0`` under any optimiser step; the ``1/n_in``
    gain keeps the output's scale independent of the width at initialisation.

    Shapes:
        (..., n_in) -> (..., n_out).
    """

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        _check_size(n_in, "n_in")
        _check_size(n_out, "n_out")
        self.n_in = n_in
        self.raw_weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None
        # softplus(V) in about (0.3, 1.6): weights near 1/n_in on average
        nn.init.uniform_(self.raw_weight, -1.0, 1.5)

    @property
    def weight(self) -> Tensor:
        """The non-negative weight matrix ``softplus(V) / n_in``, shape (n_out, n_in)."""
        return F.softplus(self.raw_weight) / self.n_in

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class ActNorm(nn.Module):
    """Elementwise affine normalisation ``y = (x + b) * exp(s)``, initialised from data.

    On its first forward call in training mode (Kingma & Dhariwal, Glow) ``b`` and ``s`` are set
    so that the batch has zero mean and unit variance per feature; afterwards they are ordinary
    parameters. The scale ``exp(s)`` is positive, so inside an ICNN a convex unit stays convex.
    The flag ``initialized`` is a buffer (saved with the ``state_dict``).

    Shapes:
        forward / inverse (B, dim) -> (B, dim); :meth:`log_det` a scalar (``sum s``, the log
        |det| of the map, the same for every point).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_size(dim, "dim")
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``b = -mean(x)``, ``s = -log std(x)`` (per feature, over the batch)."""
        flat = x.detach().reshape(-1, x.shape[-1])
        self.shift.copy_(-flat.mean(0))
        std = flat.std(0, unbiased=False) if flat.shape[0] > 1 else torch.ones_like(self.shift)
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.get_buffer("initialized").fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        return (x + self.shift) * torch.exp(self.log_scale)

    def inverse(self, y: Tensor) -> Tensor:
        """``x = y * exp(-s) - b``."""
        return y * torch.exp(-self.log_scale) - self.shift

    def log_det(self) -> Tensor:
        """``log |det dy/dx| = sum(s)``, a scalar."""
        return self.log_scale.sum()


class ICNN(nn.Module):
    """An input-convex network ``G: R^dim -> R`` (convex in its input).

    ``z_1 = act(A_0 x + b_0)``; for ``k = 1 .. depth - 1``:
    ``z_{k+1} = act(ActNorm(W⁺_k z_k + A_k x + b_k))``, and with ``augment=True`` (the paper's
    variant with augmentation units) ``z_{k+1}`` is concatenated with ``act(C_k x + c_k)``,
    convex functions of the input fed forward through the next non-negative layer; output
    ``G(x) = act(W⁺_out z + a_out x)``. Every ``W⁺`` is a :class:`PositiveLinear`.

    Args:
        dim: input dimension.
        hidden: width of each hidden layer (with ``augment``: half of it from the hidden path,
            half augmentation units).
        depth: number of hidden layers, >= 1.
        activation: a key of :data:`CONVEX_ACTIVATIONS`.
        augment: use augmentation units.
        actnorm: data-initialised :class:`ActNorm` after each non-negative layer.

    Shapes:
        (B, dim) -> (B,).

    Raises:
        FlowfieldsError: non-positive sizes, a non-convex activation name.
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
    ) -> None:
        super().__init__()
        _check_size(dim, "dim")
        _check_size(hidden, "hidden", 2 if augment else 1)
        _check_size(depth, "depth")
        self.act = convex_activation(activation)
        self.activation = activation
        self.dim, self.augment = dim, augment
        width = hidden // 2 if augment else hidden
        self.first = nn.Linear(dim, hidden)
        self.pos = nn.ModuleList([PositiveLinear(hidden, width) for _ in range(depth - 1)])
        self.skip = nn.ModuleList([nn.Linear(dim, width, bias=False) for _ in range(depth - 1)])
        self.aug = nn.ModuleList(
            [nn.Linear(dim, hidden - width) for _ in range(depth - 1)] if augment else []
        )
        self.norms = nn.ModuleList(
            [ActNorm(width) if actnorm else nn.Identity() for _ in range(depth - 1)]
        )
        self.out = PositiveLinear(hidden, 1, bias=True)
        self.out_skip = nn.Linear(dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        z = self.act(self.first(x))
        for k, (pos, skip, norm) in enumerate(zip(self.pos, self.skip, self.norms, strict=True)):
            z = self.act(norm(pos(z) + skip(x)))
            if self.augment:
                z = torch.cat([z, self.act(self.aug[k](x))], -1)
        return self.act(self.out(z) + self.out_skip(x)).squeeze(-1)

    def sweep(self, x: Tensor) -> ConvexSweep:
        """The closed-form derivative sweeps at ``x`` (B, dim): value, ``∇G``, ``∇²G`` and
        ``∇²G v`` (:class:`~flowfields.nn.convex_sweep.ConvexSweep`; hand-written because it
        is measurably faster than nested autograd, see that module)."""
        name = self.activation
        z, d1, d2 = _activation_derivatives(name, self.first(x))
        layers = [SweepLayer(_weight(self.first), d1, d2)]
        group: tuple[int, ...] = (0,)  # layers whose units make up the z fed upward
        for k, (pos, skip, norm) in enumerate(zip(self.pos, self.skip, self.norms, strict=True)):
            a = norm(pos(z) + skip(x))
            scale = torch.exp(norm.log_scale) if isinstance(norm, ActNorm) else None
            z, d1, d2 = _activation_derivatives(name, a)
            layers.append(SweepLayer(_weight(skip), d1, d2, _weight(pos), group, scale=scale))
            group = (len(layers) - 1,)
            if self.augment:
                za, d1a, d2a = _activation_derivatives(name, self.aug[k](x))
                layers.append(SweepLayer(_weight(self.aug[k]), d1a, d2a))
                group = (*group, len(layers) - 1)
                z = torch.cat([z, za], -1)
        G, g1, g2 = _activation_derivatives(name, self.out(z) + self.out_skip(x))
        layers.append(SweepLayer(_weight(self.out_skip), g1, g2, _weight(self.out), group))
        return ConvexSweep(G.squeeze(-1), layers)

    def derivatives(self, x: Tensor, hessian: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(G(x), ∇G(x), ∇²G(x))`` in closed form (:meth:`sweep`), (B,), (B, dim),
        (B, dim, dim); with ``hessian=False`` the third entry is None."""
        sw = self.sweep(x)
        return sw.value, sw.grad, sw.hessian() if hessian else None


class PICNN(nn.Module):
    """A partially input-convex network ``G(x, c)``: convex in ``x`` for every context ``c``.

    A context path ``u_{k+1} = tanh(U_k u_k)`` (unconstrained, ``u_0 = c``) gates a convex
    path: ``z_{k+1} = act(W⁺_k (z_k * softplus(P_k u_k)) + A_k (x * (Q_k u_k)) + R_k u_k)``
    (Amos et al. 2017, section 3.2): the gates multiplying ``z_k`` are positive and the term
    in ``x`` is linear in ``x``, so each unit stays convex in ``x``. With ``actnorm=True``
    every hidden layer's pre-activation passes through a data-initialised :class:`ActNorm`
    (positive scale, convexity kept) as in :class:`ICNN`: without it the initial curvature
    ``∇²_x G`` is ~1e-3 (products of ``1/n_in``-scaled positive weights) and a conditional
    CP-Flow starts, and in ``cpflow-vi`` stayed, at a near-constant Hessian (an affine map).
    Used for conditional CP-Flows (amortised variational inference, arXiv:2012.05942).

    Shapes:
        x (B, dim), context (B, context_dim) -> (B,).
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        hidden: int = 64,
        depth: int = 3,
        activation: str = "softplus",
        *,
        actnorm: bool = True,
    ) -> None:
        super().__init__()
        for value, name in ((dim, "dim"), (context_dim, "context_dim"), (hidden, "hidden")):
            _check_size(value, name)
        _check_size(depth, "depth")
        self.act = convex_activation(activation)
        self.activation = activation
        self.dim, self.context_dim = dim, context_dim
        outs = [hidden] * (depth - 1) + [1]
        self.U = nn.ModuleList(
            [nn.Linear(context_dim if k == 0 else hidden, hidden) for k in range(depth)]
        )
        self.first = nn.Linear(dim, hidden)
        self.first_ctx = nn.Linear(context_dim, hidden)
        self.pos = nn.ModuleList([PositiveLinear(hidden, o) for o in outs])
        self.gate = nn.ModuleList([nn.Linear(hidden, hidden) for _ in outs])
        self.xgate = nn.ModuleList([nn.Linear(hidden, dim) for _ in outs])
        self.skip = nn.ModuleList([nn.Linear(dim, o, bias=False) for o in outs])
        self.ctx = nn.ModuleList([nn.Linear(hidden, o) for o in outs])
        self.norms = nn.ModuleList(
            [
                ActNorm(o) if actnorm and k + 1 < len(outs) else nn.Identity()
                for k, o in enumerate(outs)
            ]
        )

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        check(
            isinstance(context, Tensor) and context.shape == (x.shape[0], self.context_dim),
            "context",
            context,
            f"a tensor of shape ({x.shape[0]}, {self.context_dim})",
        )
        u = torch.tanh(self.U[0](context))
        z = self.act(self.first(x) + self.first_ctx(context))
        for k in range(len(self.pos)):
            gated = z * F.softplus(self.gate[k](u))
            pre = self.pos[k](gated) + self.skip[k](x * self.xgate[k](u)) + self.ctx[k](u)
            z = self.act(self.norms[k](pre))
            if k + 1 < len(self.pos):
                u = torch.tanh(self.U[k + 1](u))
        return z.squeeze(-1)

    def sweep(self, x: Tensor, context: Tensor) -> ConvexSweep:
        """The closed-form derivative sweeps in ``x`` at ``(x, context)``, as
        :meth:`ICNN.sweep`: given the context every pre-activation is affine in ``x``
        (positive gates ``c_k`` on the hidden path, x-gates ``e_k``, ActNorm scales)."""
        check(
            isinstance(context, Tensor) and context.shape == (x.shape[0], self.context_dim),
            "context",
            context,
            f"a tensor of shape ({x.shape[0]}, {self.context_dim})",
        )
        name = self.activation
        u = torch.tanh(self.U[0](context))
        z, d1, d2 = _activation_derivatives(name, self.first(x) + self.first_ctx(context))
        layers = [SweepLayer(_weight(self.first), d1, d2)]
        for k in range(len(self.pos)):
            gate = F.softplus(self.gate[k](u))
            xg = self.xgate[k](u)
            norm = self.norms[k]
            a = norm(self.pos[k](z * gate) + self.skip[k](x * xg) + self.ctx[k](u))
            scale = torch.exp(norm.log_scale) if isinstance(norm, ActNorm) else None
            z, d1, d2 = _activation_derivatives(name, a)
            W, A = _weight(self.pos[k]), _weight(self.skip[k])
            layers.append(SweepLayer(A, d1, d2, W, (k,), gate=gate, xgate=xg, scale=scale))
            if k + 1 < len(self.pos):
                u = torch.tanh(self.U[k + 1](u))
        return ConvexSweep(z.squeeze(-1), layers)

    def derivatives(
        self, x: Tensor, context: Tensor, hessian: bool = True
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(G, ∇_x G, ∇²_x G)`` in closed form (:meth:`sweep`)."""
        sw = self.sweep(x, context)
        return sw.value, sw.grad, sw.hessian() if hessian else None
