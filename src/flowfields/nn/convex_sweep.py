"""Closed-form derivatives of input-convex networks: :class:`ConvexSweep`.

Used by :meth:`flowfields.nn.ICNN.sweep` and :meth:`flowfields.nn.PICNN.sweep` (Huang et al.,
"Convex Potential Flows", arXiv:2012.05942, needs ``∇G``, ``∇²G`` and ``∇²G v`` of an ICNN).

Why hand-written rather than nested autograd: it is measurably faster (``docs/cpflow.md``,
"Profile") and keeps the training gradient first-order. Every layer ``ℓ`` of these networks
has a pre-activation that is *affine in x given the layers below*::

    a_ℓ = s_ℓ ⊙ (W_ℓ (c_ℓ ⊙ z_in(ℓ)) + A_ℓ (e_ℓ ⊙ x) + b_ℓ),     z_ℓ = act(a_ℓ)

(``W_ℓ ≥ 0`` on the hidden path or absent, ``c_ℓ`` a positive per-row gate or 1, ``e_ℓ`` a
per-row x-gate or 1, ``s_ℓ`` an ActNorm scale or 1; the top unit is ``G``). With
``δ_ℓ = ∂G/∂z_ℓ`` from one backward sweep, exactly (the affine maps have no curvature)::

    ∇G   = Σ_ℓ A_ℓᵀ (s_ℓ ⊙ act'(a_ℓ) ⊙ δ_ℓ) ⊙ e_ℓ
    ∇²G  = Σ_ℓ J_ℓᵀ diag(δ_ℓ act''(a_ℓ)) J_ℓ,   J_ℓ = ∂a_ℓ/∂x (forward sweep)
    ∇²G v = reverse sweep of r_ℓ = δ_ℓ act''(a_ℓ) ȧ_ℓ, with ȧ_ℓ = J_ℓ v (forward sweep)

Everything is ordinary tensor algebra on the parameters, so a θ-gradient of any of these
needs first-order autograd only (nested autograd needs third order for ``∇θ log det ∇²G``).
Checked against autograd in float64 (``tests/nn/test_nn_icnn.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ConvexSweep", "SweepLayer"]


@dataclass
class SweepLayer:
    """One layer of units, ``a = s ⊙ (W (c ⊙ z_in) + A (e ⊙ x) + b)`` (see the module docs).

    Attributes:
        A: (n, d) weight on x.
        d1, d2: ``act'(a)``, ``act''(a)``, (B, n).
        W: (n, n_in) weight on the concatenated input units, or None (a first layer).
        inputs: indices of the layers whose units make up ``z_in``, in order.
        gate: ``c``, (B, n_in), or None.
        xgate: ``e``, (B, d), or None.
        scale: ``s``, (n,), or None.
    """

    A: Tensor
    d1: Tensor
    d2: Tensor
    W: Tensor | None = None
    inputs: tuple[int, ...] = ()
    gate: Tensor | None = None
    xgate: Tensor | None = None
    scale: Tensor | None = None

    def from_x(self, v: Tensor) -> Tensor:
        """``A (e ⊙ v)`` (B, n)."""
        return (v if self.xgate is None else v * self.xgate) @ self.A.T

    def to_x(self, rho: Tensor) -> Tensor:
        """Adjoint of :meth:`from_x`: ``(Aᵀ ρ) ⊙ e``, (B, d)."""
        out = rho @ self.A
        return out if self.xgate is None else out * self.xgate


class ConvexSweep:
    """Value, gradient, Hessian and Hessian-vector products of a network at ``x``.

    Built by a network's ``sweep(x)`` from its layers (the last layer is the single output
    unit ``G``); the backward adjoints are computed once here, each :meth:`hvp` is then one
    forward and one backward sweep of matrix products (no autograd graph of ``∇G``).

    Attributes:
        value: ``G(x)``, (B,).
        layers: the :class:`SweepLayer` list, bottom to top.
        adjoints: ``δ_ℓ = ∂G/∂z_ℓ`` per layer, (B, n_ℓ).
    """

    def __init__(self, value: Tensor, layers: list[SweepLayer]) -> None:
        self.value, self.layers = value, layers
        self.adjoints = self._backward([torch.zeros_like(ly.d1) for ly in layers], None)[1]
        self._grad: Tensor | None = None

    def _split(self, layer: SweepLayer, t: Tensor) -> list[Tensor]:
        sizes = [self.layers[i].d1.shape[1] for i in layer.inputs]
        return list(torch.split(t, sizes, -1))

    def _backward(
        self, r: list[Tensor], out_seed: Tensor | None
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Reverse sweep of the linear map ``v -> (ȧ_ℓ)``: given cotangents ``r_ℓ`` on every
        pre-activation, returns ``Σ_ℓ J_ℓᵀ r_ℓ`` (B, d) and the cotangents of every ``z_ℓ``.
        With ``r = 0`` and the top ``z``'s cotangent 1 (``out_seed`` None) this is the
        gradient sweep: the ``z``-cotangents are the adjoints ``δ_ℓ``."""
        L = len(self.layers)
        cot: list[Tensor | None] = [None] * L
        top = self.layers[-1].d1
        cot[-1] = torch.ones_like(top) if out_seed is None else out_seed
        total: Tensor | None = None
        for k in range(L - 1, -1, -1):
            ly = self.layers[k]
            ck = cot[k]
            rho = r[k] if ck is None else r[k] + ck * ly.d1
            if ly.scale is not None:
                rho = rho * ly.scale
            part = ly.to_x(rho)
            total = part if total is None else total + part
            if ly.W is not None:
                back = rho @ ly.W
                if ly.gate is not None:
                    back = back * ly.gate
                for i, piece in zip(ly.inputs, self._split(ly, back), strict=True):
                    prev = cot[i]
                    cot[i] = piece if prev is None else prev + piece
        return total, [
            torch.zeros_like(ly.d1) if c is None else c
            for c, ly in zip(cot, self.layers, strict=True)
        ]

    @property
    def grad(self) -> Tensor:
        """``∇G(x)``, (B, d)."""
        if self._grad is None:
            g = self._backward([torch.zeros_like(ly.d1) for ly in self.layers], None)[0]
            assert g is not None
            self._grad = g
        return self._grad

    def _tangents(self, v: Tensor) -> list[Tensor]:
        """``ȧ_ℓ = J_ℓ v`` for every layer, (B, n_ℓ)."""
        out: list[Tensor] = []
        for ly in self.layers:
            t = ly.from_x(v)
            if ly.W is not None:
                zin = torch.cat([out[i] * self.layers[i].d1 for i in ly.inputs], -1)
                if ly.gate is not None:
                    zin = zin * ly.gate
                t = t + zin @ ly.W.T
            out.append(t if ly.scale is None else t * ly.scale)
        return out

    def hvp(self, v: Tensor) -> Tensor:
        """``∇²G(x) v`` for v (B, d), (B, d)."""
        tangents = self._tangents(v)
        r = [dz * ly.d2 * t for dz, ly, t in zip(self.adjoints, self.layers, tangents, strict=True)]
        zero = torch.zeros_like(self.layers[-1].d1)
        Hv = self._backward(r, zero)[0]
        assert Hv is not None
        return Hv

    def jacobians(self) -> list[Tensor]:
        """``J_ℓ = ∂a_ℓ/∂x`` per layer, (B, n_ℓ, d) (a first layer's is ``A`` expanded)."""
        B = self.value.shape[0]
        out: list[Tensor] = []
        for ly in self.layers:
            A = ly.A if ly.xgate is None else ly.A * ly.xgate.unsqueeze(1)
            J = A if A.ndim == 3 else A.expand(B, *A.shape)
            if ly.W is not None:
                Jin = torch.cat([out[i] * self.layers[i].d1.unsqueeze(-1) for i in ly.inputs], 1)
                if ly.gate is not None:
                    Jin = Jin * ly.gate.unsqueeze(-1)
                J = torch.matmul(ly.W, Jin) + J
            out.append(J if ly.scale is None else J * ly.scale[:, None])
        return out

    def hessian(self) -> Tensor:
        """``∇²G(x)``, (B, d, d). Layers whose Jacobian is the same for every row (no ``W``,
        no x-gate: a first layer, augmentation units) use ``c @ (A ⊗ A)`` (one matrix
        product, for d <= 64); the others are stacked into one batched product."""
        B = self.value.shape[0]
        Js, cs = [], []
        H: Tensor | None = None
        for ly, J, dz in zip(self.layers, self.jacobians(), self.adjoints, strict=True):
            c = dz * ly.d2
            if ly.W is None and ly.xgate is None and ly.scale is None and ly.A.shape[1] <= 64:
                n, d = ly.A.shape
                P = (ly.A.unsqueeze(-1) * ly.A.unsqueeze(1)).reshape(n, d * d)
                term = (c @ P).reshape(B, d, d)
                H = term if H is None else H + term
            else:
                Js.append(J)
                cs.append(c)
        if Js:
            J, c = torch.cat(Js, 1), torch.cat(cs, 1)
            term = (J * c.unsqueeze(-1)).transpose(1, 2) @ J
            H = term if H is None else H + term
        assert H is not None
        return H
