"""The uniform density of a compact manifold as a density model (the base of a manifold CNF)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfields.density import check_sample_count
from flowfields.errors import check
from flowfields.manifolds.base import Manifold

__all__ = ["ManifoldBase"]


class ManifoldBase(nn.Module):
    """``manifold.random_base`` / ``manifold.base_log_prob`` as a density model.

    Uniform on S^n (``-log |S^n|``) and T^d (``-d log 2 pi``), standard normal on R^d. Its
    samples take the dtype and device of the module (a zero buffer, moved by ``.to``).
    """

    def __init__(self, manifold: Manifold) -> None:
        super().__init__()
        check(isinstance(manifold, Manifold), "manifold", manifold, "a Manifold")
        self.manifold = manifold
        self.event_shape = torch.Size([manifold.ambient_dim])
        self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` base points, shape (n, ambient_dim)."""
        check_sample_count(n)
        ref = self._ref
        assert isinstance(ref, Tensor)
        x = self.manifold.random_base(
            n, generator, dtype=torch.float64, device=generator.device if generator else "cpu"
        )
        return self.manifold.projx(x.to(device=ref.device)).to(ref.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Base log-density w.r.t. the Riemannian volume, shape (B,)."""
        self.manifold.check_point(x)
        return self.manifold.base_log_prob(x)
