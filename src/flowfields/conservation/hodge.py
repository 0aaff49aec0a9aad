"""Hodge (Helmholtz) decomposition ``F = ∇φ + w`` with an exactly divergence-free ``w``.

From "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741): fit a scalar
network ``φ`` and a divergence-free network ``w`` to a field ``F`` by least squares; because
``div w = 0`` exactly, ``div F = Δφ`` is carried by the gradient part alone. On R^d the split is
unique only up to harmonic gradients (``∇h`` with ``Δh = 0``, e.g. constants); fields that decay
pin it down.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import vjp

from flowfields.density import check_points, weights_dtype
from flowfields.errors import check, check_shape
from flowfields.nn.divfree import DivFreeMatrixField, DivFreeVectorField
from flowfields.nn.layers import mlp

__all__ = ["HodgeDecomposition", "gradient"]


def gradient(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample gradient of a scalar field: ``f`` maps (B, d) -> (B,), rows independent.

    One reverse pass with ``torch.func.vjp`` (composable with autograd for training).

    Returns:
        ``(f(x), ∇f(x))`` of shapes (B,), (B, d).
    """
    out = vjp(f, x)
    value, pullback = out[0], out[1]
    (grad,) = pullback(torch.ones_like(value))
    return value, grad


class HodgeDecomposition(nn.Module):
    """``F ≈ ∇φ + w`` with a scalar MLP ``φ`` and a divergence-free network ``w``.

    Paper: "Neural Conservation Laws: A Divergence-Free Perspective" (arXiv:2210.01741),
    the Hodge decomposition experiment.

    Args:
        dim: d.
        construction: ``"matrix"`` or ``"vector"`` for ``w``.
        hidden, depth: sizes of both networks.

    Shapes:
        ``forward(x)``: x (B, d) -> (∇φ (B, d), w (B, d)).
    """

    def __init__(
        self, dim: int, construction: str = "matrix", hidden: int = 128, depth: int = 3
    ) -> None:
        super().__init__()
        check(isinstance(dim, int) and dim >= 2, "dim", dim, "an integer >= 2")
        check(construction in ("matrix", "vector"), "construction", construction, "matrix|vector")
        self.dim = dim
        cls = DivFreeMatrixField if construction == "matrix" else DivFreeVectorField
        self.divfree = cls(dim, hidden=hidden, depth=depth)
        # no output bias: a constant φ has no gradient
        self.potential = mlp(dim, 1, hidden, depth, "silu", bias_out=False)

    def phi(self, x: Tensor) -> Tensor:
        """The scalar potential ``φ(x)`` (B,)."""
        return self.potential(x).squeeze(-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_points(x, (self.dim,), dtype=weights_dtype(self))
        _, grad_phi = gradient(self.phi, x)
        return grad_phi, self.divfree(x)

    def loss(self, x: Tensor, field: Tensor) -> Tensor:
        """Mean squared residual ``|F - ∇φ - w|²`` at points x (B, d) with F (B, d)."""
        check_shape(field, "field", ndim=2, last=self.dim)
        grad_phi, w = self(x)
        return ((field - grad_phi - w) ** 2).sum(-1).mean()
