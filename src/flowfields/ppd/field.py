"""The vector-field network of the manifold experiments: features of x, an MLP, a projection.

On S^n the input is the ambient point; on T^d it is ``(cos x, sin x)`` (so the field is
periodic); the output is an ambient vector, projected onto the tangent space at x.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfields.errors import check
from flowfields.manifolds import FlatTorus, Manifold
from flowfields.nn import MLPField

__all__ = ["ManifoldField"]


class ManifoldField(nn.Module):
    """``v(t, x) = proju(x, MLP(t, features(x)))``.

    Its output is tangent (``is_tangent = True``): a manifold :class:`~flowfields.matching.CNF`
    and :func:`~flowfields.ppd.lmc_residual` do not project it again.

    Args:
        manifold: the manifold (S^n, T^d, or a product of them).
        hidden, depth, time_embed_dim: the :class:`~flowfields.nn.MLPField` core.
    """

    is_tangent = True

    def __init__(
        self, manifold: Manifold, hidden: int = 64, depth: int = 3, time_embed_dim: int = 16
    ) -> None:
        super().__init__()
        check(isinstance(manifold, Manifold), "manifold", manifold, "a Manifold")
        self.manifold = manifold
        self.periodic = isinstance(manifold, FlatTorus)
        d_in = 2 * manifold.ambient_dim if self.periodic else manifold.ambient_dim
        self.core = MLPField(d_in, hidden=hidden, depth=depth, time_embed_dim=time_embed_dim)
        self.readout = nn.Linear(d_in, manifold.ambient_dim)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        h = torch.cat([torch.cos(x), torch.sin(x)], -1) if self.periodic else x
        return self.manifold.proju(x, self.readout(self.core(t, h)))
