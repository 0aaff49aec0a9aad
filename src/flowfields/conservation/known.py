"""A vector field with a known Hodge decomposition, for testing decompositions."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KnownHodgeField"]


class KnownHodgeField:
    """``F = ∇φ + w`` with closed-form parts in d dimensions (seeded construction): the test
    field of the Hodge decomposition experiment of "Neural Conservation Laws" (arXiv:2210.01741).

    - ``φ(x) = ℓ sum_m α_m exp(-|x - c_m|² / 2ℓ²)`` (two bumps, width ``ℓ = √d`` so that the
      field is not negligible at typical points in high d), so ``∇φ`` is closed form;
    - ``w(x) = -sum_m g_m(x) B_m (x - e_m) / ℓ`` with ``g_m = exp(-|x - e_m|² / 2ℓ²)`` and
      antisymmetric ``B_m``: the row-wise divergence of the antisymmetric ``ℓ g_m B_m``, hence
      divergence-free.

    Shapes: every method maps x (B, d) to (B, d), in float64.

    Args:
        dim: d.
        seed: seed of the random centres, amplitudes and antisymmetric matrices.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(1000 + seed + dim)
        self.dim = dim
        self.alpha = torch.tensor([4.0, -3.0], dtype=torch.float64)
        self.c = 0.8 * torch.randn(2, dim, generator=g, dtype=torch.float64)
        self.e = 0.8 * torch.randn(2, dim, generator=g, dtype=torch.float64)
        b = torch.randn(2, dim, dim, generator=g, dtype=torch.float64)
        self.b = (b - b.transpose(1, 2)) * 2.0 / dim**0.5
        self.ell2 = float(dim)

    def grad_phi(self, x: Tensor) -> Tensor:
        """∇φ (B, d)."""
        x = x.to(torch.float64)
        y = x.unsqueeze(1) - self.c  # (B, 2, d)
        g = torch.exp(-0.5 * (y * y).sum(-1) / self.ell2)  # (B, 2)
        return -(self.alpha * g).unsqueeze(-1).mul(y).sum(1) / self.ell2**0.5

    def w(self, x: Tensor) -> Tensor:
        """The divergence-free part (B, d)."""
        x = x.to(torch.float64)
        y = x.unsqueeze(1) - self.e
        g = torch.exp(-0.5 * (y * y).sum(-1) / self.ell2)
        return -(g.unsqueeze(-1) * torch.einsum("mij,bmj->bmi", self.b, y)).sum(1) / self.ell2**0.5

    def __call__(self, x: Tensor) -> Tensor:
        """F = ∇φ + w, (B, d)."""
        return self.grad_phi(x) + self.w(x)
