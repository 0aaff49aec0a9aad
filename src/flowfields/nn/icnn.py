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


class _Unit:
    """One layer of convex units during a closed-form derivative sweep: the pre-activation's
    Jacobian ``J = ∂a/∂x`` (B, n, d), or ``W`` (n, d) when it is the same for every row (a
    first layer, augmentation units), and ``act'``, ``act''`` at the pre-activation (B, n)."""

    __slots__ = ("J", "W", "d1", "d2")

    def __init__(self, J: Tensor | None, d1: Tensor, d2: Tensor, W: Tensor | None = None) -> None:
        self.J, self.W, self.d1, self.d2 = J, W, d1, d2

    def jacobian(self) -> Tensor:
        if self.J is not None:
            return self.J
        assert self.W is not None
        return self.W.expand(self.d1.shape[0], *self.W.shape)


def _weight(m: nn.Module) -> Tensor:
    """A linear layer's weight matrix (typed, for modules held in an ``nn.ModuleList``)."""
    w = m.weight
    assert isinstance(w, Tensor)
    return w


def _hessian_sum(units: list[_Unit], adjoints: list[Tensor]) -> Tensor:
    """``Σ_layers Jᵀ diag(δ act''(a)) J``, (B, d, d): the Hessian of a network whose
    pre-activations are affine in its input given the previous layer (exact, not
    Gauss-Newton: the affine maps have no second derivative). Row-independent ``W`` layers
    use ``c @ (W ⊗ W)`` (one matrix product, small ``d``); the others are stacked into one
    batched product."""
    B = adjoints[0].shape[0]
    H: Tensor | None = None
    Js, cs = [], []
    for u, dz in zip(units, adjoints, strict=True):
        c = dz * u.d2
        if u.W is not None and u.W.shape[1] <= 64:
            n, d = u.W.shape
            P = (u.W.unsqueeze(-1) * u.W.unsqueeze(1)).reshape(n, d * d)
            term = (c @ P).reshape(B, d, d)
            H = term if H is None else H + term
        else:
            Js.append(u.jacobian())
            cs.append(c)
    if Js:
        J, c = torch.cat(Js, 1), torch.cat(cs, 1)
        term = (J * c.unsqueeze(-1)).transpose(1, 2) @ J
        H = term if H is None else H + term
    assert H is not None
    return H


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

    def derivatives(self, x: Tensor, hessian: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(G(x), ∇G(x), ∇²G(x))`` in closed form, (B,), (B, dim), (B, dim, dim).

        Hand-written rather than nested autograd because it is measurably faster (see
        ``docs/cpflow.md``, "Profile"): every pre-activation ``a`` is affine in ``x`` given the
        previous layer, so one forward sweep carries each layer's Jacobian
        ``J = ∂a/∂x = S (W⁺ diag(act'(a_prev)) J_prev + A)`` (``S`` the ActNorm scale), one
        backward sweep the adjoints ``δ = ∂G/∂z``, and ``∇²G = Σ_layers Jᵀ diag(δ act''(a)) J``
        exactly. Everything is ordinary differentiable tensor algebra, so the θ-gradient of
        ``log det`` of the result needs first-order autograd only (nested autograd needs
        third order). Checked against autograd in float64 (``tests/cpflow/test_nn_icnn.py``).
        With ``hessian=False`` the third entry is None.
        """
        name = self.activation
        W0 = self.first.weight
        z, d1, d2 = _activation_derivatives(name, self.first(x))
        units = [_Unit(None, d1, d2, W=W0)]
        # per non-negative layer: (W⁺, ActNorm scale or None, index of its unit in `units`)
        layers: list[tuple[Tensor, Tensor | None]] = []
        groups: list[list[int]] = [[0]]  # units making up the z fed to each layer
        for k, (pos, skip, norm) in enumerate(zip(self.pos, self.skip, self.norms, strict=True)):
            W = _weight(pos)
            Jz = torch.cat([units[i].jacobian() * units[i].d1.unsqueeze(-1) for i in groups[-1]], 1)
            pre = pos(z) + skip(x)
            a = norm(pre)
            scale = torch.exp(norm.log_scale) if isinstance(norm, ActNorm) else None
            J = torch.matmul(W, Jz) + _weight(skip)
            if scale is not None:
                J = J * scale[:, None]
            layers.append((W, scale))
            zh, d1, d2 = _activation_derivatives(name, a)
            units.append(_Unit(J, d1, d2))
            group = [len(units) - 1]
            if self.augment:
                C = _weight(self.aug[k])
                za, d1a, d2a = _activation_derivatives(name, self.aug[k](x))
                units.append(_Unit(None, d1a, d2a, W=C))
                group.append(len(units) - 1)
                zh = torch.cat([zh, za], -1)
            groups.append(group)
            z = zh
        Wout = self.out.weight
        Jz = torch.cat([units[i].jacobian() * units[i].d1.unsqueeze(-1) for i in groups[-1]], 1)
        a_out = self.out(z) + self.out_skip(x)
        G, g1, g2 = _activation_derivatives(name, a_out)
        J_out = torch.matmul(Wout, Jz) + self.out_skip.weight  # (B, 1, d)
        grad = (g1.unsqueeze(-1) * J_out).squeeze(1)
        if not hessian:
            return G.squeeze(-1), grad, None
        # backward sweep: δ = ∂G/∂z per unit, layer by layer from the output
        adj: dict[int, Tensor] = {}
        dz = g1 * Wout  # (B, hidden) for the last z
        for k in range(len(groups) - 1, -1, -1):
            sizes = [units[i].d1.shape[1] for i in groups[k]]
            for i, part in zip(groups[k], torch.split(dz, sizes, -1), strict=True):
                adj[i] = part
            if k == 0:
                break
            W, scale = layers[k - 1]
            h = groups[k][0]
            da = adj[h] * units[h].d1
            if scale is not None:
                da = da * scale
            dz = torch.matmul(da, W)
        order = sorted(adj)
        H = _hessian_sum([units[i] for i in order], [adj[i] for i in order])
        H = H + (g2.unsqueeze(-1) * J_out).transpose(1, 2) @ J_out
        return G.squeeze(-1), grad, H


class PICNN(nn.Module):
    """A partially input-convex network ``G(x, c)``: convex in ``x`` for every context ``c``.

    A context path ``u_{k+1} = tanh(U_k u_k)`` (unconstrained, ``u_0 = c``) gates a convex
    path: ``z_{k+1} = act(W⁺_k (z_k * softplus(P_k u_k)) + A_k (x * (Q_k u_k)) + R_k u_k)``
    (Amos et al. 2017, section 3.2): the gates multiplying ``z_k`` are positive and the term
    in ``x`` is linear in ``x``, so each unit stays convex in ``x``. Used for conditional
    CP-Flows (amortised variational inference, arXiv:2012.05942 section 5.2).

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
            z = self.act(self.pos[k](gated) + self.skip[k](x * self.xgate[k](u)) + self.ctx[k](u))
            if k + 1 < len(self.pos):
                u = torch.tanh(self.U[k + 1](u))
        return z.squeeze(-1)

    def derivatives(
        self, x: Tensor, context: Tensor, hessian: bool = True
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(G, ∇_x G, ∇²_x G)`` in closed form, as :meth:`ICNN.derivatives` (hand-written
        for the same reason): given the context every pre-activation is affine in ``x``,
        ``J_{k+1} = W⁺ diag(gate_k act'(a_k)) J_k + A_k diag(xgate_k)``."""
        check(
            isinstance(context, Tensor) and context.shape == (x.shape[0], self.context_dim),
            "context",
            context,
            f"a tensor of shape ({x.shape[0]}, {self.context_dim})",
        )
        name = self.activation
        u = torch.tanh(self.U[0](context))
        W0 = self.first.weight
        z, d1, d2 = _activation_derivatives(name, self.first(x) + self.first_ctx(context))
        units = [_Unit(None, d1, d2, W=W0)]
        gates: list[Tensor] = []
        pos_w: list[Tensor] = []
        for k in range(len(self.pos)):
            gate = F.softplus(self.gate[k](u))
            xg = self.xgate[k](u)  # (B, d)
            W = _weight(self.pos[k])
            a = self.pos[k](z * gate) + self.skip[k](x * xg) + self.ctx[k](u)
            J = torch.matmul(W, (gate * units[-1].d1).unsqueeze(-1) * units[-1].jacobian())
            J = J + _weight(self.skip[k]) * xg.unsqueeze(1)
            z, d1, d2 = _activation_derivatives(name, a)
            units.append(_Unit(J, d1, d2))
            gates.append(gate)
            pos_w.append(W)
            if k + 1 < len(self.pos):
                u = torch.tanh(self.U[k + 1](u))
        top = units[-1]
        grad = (top.d1.unsqueeze(-1) * top.jacobian()).squeeze(1)
        if not hessian:
            return z.squeeze(-1), grad, None
        adjoints = [torch.ones_like(top.d1)]
        for k in range(len(self.pos) - 1, -1, -1):
            da = adjoints[0] * units[k + 1].d1
            adjoints.insert(0, torch.matmul(da, pos_w[k]) * gates[k])
        return z.squeeze(-1), grad, _hessian_sum(units, adjoints)
