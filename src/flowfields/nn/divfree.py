"""Divergence-free neural vector fields, exact by construction.

From Richter-Powell, Lipman, Chen, "Neural Conservation Laws: A Divergence-Free Perspective"
(NeurIPS 2022, arXiv:2210.01741). The row-wise divergence of an antisymmetric matrix field is
divergence-free (the Euclidean form of d∘d = 0):

- :class:`DivFreeMatrixField`: a network outputs the d(d-1)/2 free entries of an antisymmetric
  ``A(x)``; ``v_i = sum_j dA_ij/dx_j``. First derivatives only; in 2-D it is a stream function.
- :class:`DivFreeVectorField`: any network ``b: R^d -> R^d`` and ``A = Jb - Jb^T``, so
  ``v = Δb - ∇(div b)``. Only d outputs, but second derivatives.

Efficiency: every derivative is forward mode, vectorised over the d coordinate directions (never a
per-dimension Python loop): either ``torch.func.vmap(jvp)`` (``engine="func"``) or, about twice as
fast on small networks, the trunk's jets propagated layer by layer as batched matmuls
(``engine="jet"``, the default). For the matrix field the
antisymmetric read-out is linear in the last hidden layer ``h``, ``A(x) = W h(x)``, so
``v_i = sum_{j,k} W_ijk dh_k/dx_j`` needs only the d directional derivatives of ``h`` (d JVPs
through the trunk, not through the d^2/2 outputs). For the vector field, ``Δb`` and ``div b``
come out of d forward-over-forward JVPs and ``∇(div b)`` out of one reverse pass over them, so
the cost grows like d (not d^2) trunk passes.

Both take ``x`` of shape (batch, dim) and return ``v`` of the same shape. With
``time_dependent=True`` the network also sees ``t`` (derivatives are in ``x`` only), and every
field can be called as ``v(t, x)`` (contract of :mod:`flowfields.nn`), so it can serve as the
vector field of a CNF. With ``periodic=True`` the input passes through Fourier features
``sin(k x), cos(k x)``, ``k = 1..n_frequencies``, making the field periodic on the flat torus
``[0, 2π)^d`` (still exactly divergence-free).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from flowfields.density import check_points, weights_dtype
from flowfields.errors import check, check_finite
from flowfields.nn.layers import ACTIVATIONS, mlp
from flowfields.nn.time import broadcast_time

__all__ = ["DivFreeMatrixField", "DivFreeVectorField", "PeriodicFeatures"]

_ENGINES = ("jet", "func")
#: Up to this d the vector field takes all d(d+1)/2 second derivatives forward; above it
#: ``∇ div b`` is one reverse pass. The forward-only path is exact for any d (tested at d = 3),
#: but it carries d(d+1)/2 + d tangent streams against about 2d + 1 for the reverse pass.
#: Measured (width 128, depth 3, batch 256, interleaved, median time forward-only / reverse,
#: per call / per step, shared 2-core machine): d = 2: 0.87 / 0.73; d = 3: 1.33 / 1.19;
#: d = 4: 1.64 / 1.46; d = 8: 3.6 / 3.0. Saving one (P, B, H) product per layer moved d = 3
#: only to 1.28 / 1.06. So only d = 2 uses it.
_HESSIAN_JETS_MAX_DIM = 2
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _act_jet(name: str, z: Tensor, order: int) -> tuple[Tensor, ...]:
    """Activation value and its first ``order`` derivatives at ``z`` (closed forms)."""
    if name == "silu":
        s = torch.sigmoid(z)
        out: tuple[Tensor, ...] = (z * s, s * (1 + z * (1 - s)))
        if order == 2:
            out += (s * (1 - s) * (2 + z * (1 - 2 * s)),)
    elif name == "tanh":
        y = torch.tanh(z)
        out = (y, 1 - y * y)
        if order == 2:
            out += (-2 * y * (1 - y * y),)
    elif name == "softplus":
        s = torch.sigmoid(z)
        out = (nn.functional.softplus(z), s)
        if order == 2:
            out += (s * (1 - s),)
    else:  # gelu (exact, erf form): z Phi(z); Phi + z phi; (2 - z^2) phi
        cdf = 0.5 * (1 + torch.erf(z * _SQRT_HALF))
        pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
        out = (z * cdf, cdf + z * pdf)
        if order == 2:
            out += ((2 - z * z) * pdf,)
    return out


class PeriodicFeatures(nn.Module):
    """Fourier features ``sin(k x_i), cos(k x_i)``, ``k = 1..K``, of chosen coordinates.

    Coordinates with ``periodic[i]`` False pass through unchanged (placed first), the others
    become ``2 * n_frequencies`` features each, 2π-periodic in that coordinate.

    Args:
        dim: number of coordinates.
        n_frequencies: K, frequencies 1..K.
        periodic: which coordinates are periodic (default: all).

    Shapes:
        (B, dim) -> (B, n_raw + 2 * K * n_periodic).
    """

    k: Tensor

    def __init__(
        self, dim: int, n_frequencies: int = 2, periodic: Sequence[bool] | None = None
    ) -> None:
        super().__init__()
        check(n_frequencies >= 1, "n_frequencies", n_frequencies, "an integer >= 1")
        mask = [True] * dim if periodic is None else [bool(p) for p in periodic]
        check(len(mask) == dim, "periodic", periodic, f"{dim} booleans, one per coordinate")
        self.dim = dim
        self.n_frequencies = n_frequencies
        self.periodic = tuple(mask)
        self.raw_idx = [i for i, p in enumerate(mask) if not p]
        self.per_idx = [i for i, p in enumerate(mask) if p]
        self.register_buffer(
            "k", torch.arange(1, n_frequencies + 1, dtype=torch.get_default_dtype())
        )

    @property
    def out_features(self) -> int:
        return len(self.raw_idx) + 2 * self.n_frequencies * len(self.per_idx)

    def forward(self, x: Tensor) -> Tensor:
        kx = (x[..., self.per_idx].unsqueeze(-1) * self.k.to(x.dtype)).flatten(-2)
        return torch.cat([x[..., self.raw_idx], torch.sin(kx), torch.cos(kx)], dim=-1)

    def jets(self, x: Tensor, order: int) -> tuple[Tensor, ...]:
        """Derivatives of the features along each coordinate axis e_j.

        Returns ``(∂_j f)`` of shape (dim, B, out_features) and, for ``order=2``, also
        ``(∂_j ∂_j f)`` of the same shape.
        """
        d, n_batch = self.dim, x.shape[0]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        k = self.k.to(x.dtype)
        raw = eye[:, self.raw_idx].unsqueeze(1).expand(d, n_batch, len(self.raw_idx))
        kx = x[:, self.per_idx].unsqueeze(-1) * k  # (B, p, K)
        sel = eye[:, self.per_idx][:, None, :, None]  # (d, 1, p, 1): picks coordinate j
        sin, cos = torch.sin(kx), torch.cos(kx)
        d1 = torch.cat([raw, (sel * (k * cos)).flatten(-2), (sel * (-k * sin)).flatten(-2)], -1)
        if order == 1:
            return (d1,)
        k2 = k * k
        d2 = torch.cat(
            [
                torch.zeros_like(raw),
                (sel * (-k2 * sin)).flatten(-2),
                (sel * (-k2 * cos)).flatten(-2),
            ],
            -1,
        )
        return d1, d2


class _DivFreeBase(nn.Module):
    """Shared input handling: features, time conditioning, argument checks."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        depth: int,
        activation: str,
        time_dependent: bool,
        periodic: bool | Sequence[bool],
        n_frequencies: int,
        engine: str,
    ) -> None:
        super().__init__()
        check(isinstance(dim, int) and dim >= 1, "dim", dim, "an integer >= 1")
        check(engine in _ENGINES, "engine", engine, f"one of {_ENGINES}")
        check(activation in ACTIVATIONS, "activation", activation, f"one of {list(ACTIVATIONS)}")
        self.dim = dim
        self.hidden = hidden
        self.activation = activation
        self.engine = engine
        self.time_dependent = bool(time_dependent)
        if isinstance(periodic, bool):
            periodic = [periodic] * dim
        self.features = PeriodicFeatures(dim, n_frequencies, periodic) if any(periodic) else None
        self.periodic = self.features.periodic if self.features is not None else (False,) * dim
        n_in = self.features.out_features if self.features is not None else dim
        if self.time_dependent:
            n_in += 1
        self.trunk = mlp(n_in, None, hidden, depth, activation)

    def _trunk_input(self, t: Tensor | None, x: Tensor) -> Tensor:
        z = self.features(x) if self.features is not None else x
        if self.time_dependent:
            assert t is not None  # (B,), from _parse
            z = torch.cat([z, t.unsqueeze(-1)], dim=-1)
        return z

    def _parse(self, args: tuple[Tensor, ...]) -> tuple[Tensor | None, Tensor]:
        check(len(args) in (1, 2), "arguments", len(args), "v(x) or v(t, x)")
        if len(args) == 1:
            check(
                not self.time_dependent,
                "t",
                None,
                "a time for a time-dependent field",
                "Call v(t, x).",
            )
            t, x = None, args[0]
        else:
            t, x = args
        check_points(x, (self.dim,), dtype=weights_dtype(self), finite=False)
        if not torch._C._functorch.is_functorch_wrapped_tensor(x):  # no data-dependent checks
            check_finite(x, "x")  # under vmap / grad transforms
        if self.time_dependent:
            check(t is not None, "t", t, "a time for a time-dependent field")
            assert t is not None
            t = broadcast_time(t, x)
            if not torch._C._functorch.is_functorch_wrapped_tensor(t):
                check_finite(t, "t")
        return t, x

    def _input_jets(self, t: Tensor | None, x: Tensor, order: int) -> tuple[Tensor, ...]:
        """Trunk input z(x) and its derivatives along each e_j: (B, n), (d, B, n)[, (d, B, n)]."""
        d, n_batch = self.dim, x.shape[0]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        z = self._trunk_input(t, x)
        if self.features is None:
            dz = eye.unsqueeze(1).expand(d, n_batch, d)
            ddz = None
        else:
            fj = self.features.jets(x, order)
            dz, ddz = fj[0], (fj[1] if order == 2 else None)
        if self.time_dependent:
            dz = torch.cat([dz, dz.new_zeros(d, n_batch, 1)], -1)
            if ddz is not None:
                ddz = torch.cat([ddz, ddz.new_zeros(d, n_batch, 1)], -1)
        if order == 1:
            return z, dz
        if ddz is None:
            ddz = torch.zeros_like(dz)
        return z, dz, ddz

    def _linears(self) -> list[nn.Linear]:
        """The trunk's linear layers (it alternates Linear and activation modules)."""
        mods = list(self.trunk)
        out = [m for m in mods[0::2] if isinstance(m, nn.Linear)]
        assert len(out) == len(mods) // 2
        return out

    def _trunk_jets(self, t: Tensor | None, x: Tensor, order: int) -> tuple[Tensor, ...]:
        """Forward-mode jets of the trunk along every coordinate direction at once.

        Returns ``h`` (B, H), ``∂_j h`` (d, B, H) and, for ``order=2``, ``∂_j∂_j h`` (d, B, H):
        the chain rule written out per layer (``z' = W h'``, ``h' = σ'(z) z'``,
        ``h'' = σ''(z) z'^2 + σ'(z) W h''``), all d directions in one batched matmul.
        """
        jets = self._input_jets(t, x, order)
        for lin in self._linears():
            z = lin(jets[0])
            dz = jets[1] @ lin.weight.T
            acts = _act_jet(self.activation, z, order)
            if order == 1:
                jets = (acts[0], acts[1] * dz)
            else:
                ddz = jets[2] @ lin.weight.T
                jets = (acts[0], acts[1] * dz, acts[2] * dz * dz + acts[1] * ddz)
        return jets

    def _trunk_hessian_jets(self, t: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
        """First derivatives (d, B, H) and all second derivatives (P, B, H) of the trunk.

        ``P = d(d+1)/2`` pairs ``(i, j), i <= j`` in ``torch.triu_indices`` order; per layer
        ``z'_i = W h'_i``, ``z''_ij = W h''_ij``, ``h''_ij = σ''(z) z'_i z'_j + σ'(z) z''_ij``.
        Forward only: no reverse pass is needed to get mixed derivatives.
        """
        iu = torch.triu_indices(self.dim, self.dim)
        first, second = iu[0], iu[1]
        _, dz, ddz_diag = self._input_jets(t, x, 2)
        # input features are separable per coordinate: mixed (i != j) second derivatives vanish
        ddz = ddz_diag[first] * (first == second).to(x.dtype)[:, None, None]
        h = self._trunk_input(t, x)
        for lin in self._linears():
            z = lin(h)
            dz = dz @ lin.weight.T
            ddz = ddz @ lin.weight.T
            act, act1, act2 = _act_jet(self.activation, z, 2)
            h, dz, ddz = act, act1 * dz, act2 * dz[first] * dz[second] + act1 * ddz
        return dz, ddz

    def _basis(self, x: Tensor) -> Tensor:
        """(dim, batch, dim): tangent e_j repeated over the batch, for vmapped JVPs."""
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return eye.unsqueeze(1).expand(self.dim, x.shape[0], self.dim)


class DivFreeMatrixField(_DivFreeBase):
    """Divergence-free field from an antisymmetric matrix field: ``v_i = sum_j ∂_j A_ij``.

    Paper: "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741),
    the matrix-field construction. A trunk MLP gives features ``h(x)`` of width ``hidden``;
    a linear read-out gives the d(d-1)/2 free entries of ``A(x) = W h(x)`` (antisymmetric; a
    constant offset would not change ``v``).
    Exactly divergence-free because ``sum_ij ∂_i ∂_j A_ij = 0`` for antisymmetric ``A``.

    Args:
        dim: d, the dimension of x (d = 1 gives the zero field: no antisymmetric entries).
        hidden: width of the trunk.
        depth: number of hidden layers.
        activation: smooth activation, one of silu, tanh, softplus, gelu.
        time_dependent: if True the network also takes t; call ``v(t, x)``.
        periodic: if True, Fourier input features make the field 2π-periodic in every coordinate
            (flat torus); a sequence of d booleans makes only those coordinates periodic.
        n_frequencies: number of Fourier frequencies per coordinate when periodic.
        engine: ``"jet"`` (default, fastest): forward-mode derivatives of the trunk along all
            d directions at once, with the per-layer chain rule written out in batched matmuls;
            ``"func"``: the same derivatives with ``torch.func.vmap(jvp)``. Both are exact and
            compose with ``torch.func`` transforms and autograd.

    Shapes:
        ``forward(x)`` or ``forward(t, x)``: x (B, d), t scalar or (B,) -> v (B, d).

    Example:
        >>> v = DivFreeMatrixField(3)
        >>> v(torch.randn(5, 3)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        activation: str = "silu",
        time_dependent: bool = False,
        periodic: bool | Sequence[bool] = False,
        n_frequencies: int = 2,
        engine: str = "jet",
    ) -> None:
        super().__init__(
            dim, hidden, depth, activation, time_dependent, periodic, n_frequencies, engine
        )
        n_free = dim * (dim - 1) // 2
        self.n_free = n_free
        self.readout = nn.Parameter(torch.randn(n_free, hidden) / math.sqrt(hidden))
        iu = torch.triu_indices(dim, dim, offset=1)
        self._iu: Tensor
        self.register_buffer("_iu", iu, persistent=False)

    def _antisym(self, free: Tensor) -> Tensor:
        """Free entries (..., n_free) -> antisymmetric (..., d, d)."""
        out = free.new_zeros(*free.shape[:-1], self.dim, self.dim)
        out[..., self._iu[0], self._iu[1]] = free
        return out - out.transpose(-1, -2)

    def matrix(self, *args: Tensor) -> Tensor:
        """The antisymmetric potential ``A(x)`` (or ``A(t, x)``), shape (B, d, d)."""
        t, x = self._parse(args)
        h = self.trunk(self._trunk_input(t, x))
        return self._antisym(h @ self.readout.T)

    def forward(self, *args: Tensor) -> Tensor:
        t, x = self._parse(args)
        if self.dim == 1:
            return torch.zeros_like(x)

        if self.engine == "jet":
            dh = self._trunk_jets(t, x, 1)[1]  # (d, B, H): dh[j] = ∂h/∂x_j
        else:

            def h_of(x_: Tensor) -> Tensor:
                return self.trunk(self._trunk_input(t, x_))

            dh = vmap(lambda e: jvp(h_of, (x,), (e,))[1])(self._basis(x))
        w = self._antisym(self.readout.T).permute(1, 2, 0)  # (d, d, H): W[i, j, k]
        return torch.einsum("ijk,jbk->bi", w, dh)


class DivFreeVectorField(_DivFreeBase):
    """Divergence-free field from a vector potential: ``v = Δb - ∇(div b)``.

    Paper: "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741),
    the vector-field construction: ``A = Jb - Jb^T`` is antisymmetric, and its row-wise
    divergence is ``v_i = sum_j ∂_j(∂_j b_i - ∂_i b_j) = Δb_i - ∂_i div b``.

    ``Δb`` and ``div b`` come from d forward-over-forward jets (all directions at once) and
    ``∇ div b`` from one reverse pass over those, so the cost grows like d trunk passes. At
    d = 2 the ``jet`` engine instead carries all three second derivatives forward (no reverse
    pass; 1.15-1.4x faster there, slower from d = 3 because the d(d+1)/2 mixed derivatives
    outgrow the reverse pass).

    Args:
        dim: d, the dimension of x and of b.
        hidden, depth, activation, time_dependent, periodic, n_frequencies, engine: as in
            :class:`DivFreeMatrixField`. ``∇ div b`` is always one ``torch.func.vjp``.

    Shapes:
        ``forward(x)`` or ``forward(t, x)``: x (B, d), t scalar or (B,) -> v (B, d).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        activation: str = "silu",
        time_dependent: bool = False,
        periodic: bool | Sequence[bool] = False,
        n_frequencies: int = 2,
        engine: str = "jet",
    ) -> None:
        super().__init__(
            dim, hidden, depth, activation, time_dependent, periodic, n_frequencies, engine
        )
        self.head = nn.Linear(hidden, dim, bias=False)  # a constant b does not change v

    def potential(self, *args: Tensor) -> Tensor:
        """The vector potential ``b(x)`` (or ``b(t, x)``), shape (B, d)."""
        t, x = self._parse(args)
        return self.head(self.trunk(self._trunk_input(t, x)))

    def forward(self, *args: Tensor) -> Tensor:
        t, x = self._parse(args)
        basis = self._basis(x)

        def b_of(x_: Tensor) -> Tensor:
            return self.head(self.trunk(self._trunk_input(t, x_)))

        def div_and_laplacian_jet(x_: Tensor) -> tuple[Tensor, Tensor]:
            _, dh, ddh = self._trunk_jets(t, x_, 2)
            db = dh @ self.head.weight.T  # (d, B, d): db[j] = ∂_j b
            div = torch.diagonal(db, dim1=0, dim2=2).sum(-1)
            return div, ddh.sum(0) @ self.head.weight.T

        def div_and_laplacian(x_: Tensor) -> tuple[Tensor, Tensor]:
            if self.engine == "jet":
                return div_and_laplacian_jet(x_)

            def d1(y: Tensor, e: Tensor) -> Tensor:
                return jvp(b_of, (y,), (e,))[1]

            def d2(e: Tensor) -> tuple[Tensor, Tensor]:
                out = jvp(lambda y: d1(y, e), (x_,), (e,))  # (∂_e b, ∂_e∂_e b)
                return out[0], out[1]

            db, ddb = vmap(d2)(basis)  # (d, B, d) each
            div = torch.diagonal(db, dim1=0, dim2=2).sum(-1)  # sum_j ∂_j b_j: (B,)
            return div, ddb.sum(0)

        if self.engine == "jet" and self.dim <= _HESSIAN_JETS_MAX_DIM:
            # all second derivatives forward: v_i = sum_j ∂_jj b_i - sum_j ∂_ij b_j
            _, ddh = self._trunk_hessian_jets(t, x)
            ddb = ddh @ self.head.weight.T  # (P, B, d)
            d = self.dim
            pair = torch.zeros(d, d, dtype=torch.long, device=x.device)
            iu = torch.triu_indices(d, d, device=x.device)
            pair[iu[0], iu[1]] = torch.arange(iu.shape[1], device=x.device)
            pair = torch.maximum(pair, pair.T)  # pair[i, j]: index of (min, max)
            lap = ddb[torch.diagonal(pair)].sum(0)
            # grad_div[b, i] = sum_j ∂_i ∂_j b_j = sum_j ddb[pair[i, j], b, j]
            cols = torch.arange(d, device=x.device)
            grad_div = ddb[pair, :, cols.unsqueeze(0).expand(d, d)].sum(1).T
            return lap - grad_div
        div, pullback, lap = vjp(div_and_laplacian, x, has_aux=True)  # type: ignore[misc]
        (grad_div,) = pullback(torch.ones_like(div))
        return lap - grad_div
