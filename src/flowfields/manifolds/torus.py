"""The flat torus T^d = (R / 2 pi Z)^d, points as d angles in [-pi, pi).

Flat metric: ``exp_x(u) = wrap(x + u)``, ``log_x(y) = wrap(y - x)`` componentwise with
``wrap(a) = a - 2 pi round(a / 2 pi)`` in [-pi, pi), and the uniform density ``(2 pi)^-d``.
Any real angles are valid points (they name the same point modulo 2 pi).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowfields.manifolds.base import Manifold, check_dim, like

__all__ = ["FlatTorus", "wrap"]


def wrap(a: Tensor) -> Tensor:
    """Angles modulo 2 pi into [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


class FlatTorus(Manifold):
    """The flat torus T^d (``FlatTorus(2)`` for Ramachandran (phi, psi) angles)."""

    def __init__(self, d: int) -> None:
        self.dim = self.ambient_dim = check_dim(d, "d")
        self.name = f"T^{d}"

    def projx(self, x: Tensor) -> Tensor:
        return wrap(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return wrap(x + u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return wrap(y - x)

    def retraction(self, x: Tensor, dx: Tensor) -> Tensor:
        """``x + dx`` unwrapped (the density is periodic; outputs are wrapped at the end)."""
        return x + dx

    def random_base(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        dt, dev = like(generator, dtype, device)
        u = torch.rand(n, self.dim, generator=generator, dtype=dt, device=dev)
        return 2 * math.pi * u - math.pi

    def base_log_prob(self, x: Tensor) -> Tensor:
        value = -self.dim * math.log(2 * math.pi)
        return torch.full(x.shape[:-1], value, dtype=x.dtype, device=x.device)
