"""Multi-layer perceptron vector fields ``v(t, x)`` for low-dimensional data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_shape
from flowfields.nn.layers import mlp
from flowfields.nn.time import TimeEmbedding, broadcast_time

__all__ = ["MLPField"]


class MLPField(nn.Module):
    """Time-dependent MLP vector field ``v(t, x)`` on R^dim.

    The network used for the 2-D experiments of Flow Matching (Lipman et al., "Flow Matching
    for Generative Modeling", arXiv:2210.02747) and as a generic CNF field: the input is
    ``[x, TimeEmbedding(t)]``, followed by ``depth`` hidden layers of width ``hidden`` with a
    smooth activation, and a linear output layer. Smooth activations only, so divergences and
    second derivatives exist.

    Args:
        dim: data dimension D.
        hidden: hidden width.
        depth: number of hidden layers (>= 1).
        time_embed_dim: size of the sinusoidal time embedding (even).
        activation: a name from :data:`~flowfields.nn.ACTIVATIONS` (``"silu"``,
            ``"softplus"``, ``"tanh"``, ``"gelu"``).
        max_frequency: highest angular frequency of the time embedding (see
            :class:`~flowfields.nn.TimeEmbedding`).

    Shapes:
        forward(t, x): t a float, 0-d, (1,) or (B,); x (B, D) -> (B, D).

    Example:
        >>> v = MLPField(2, hidden=64, depth=3)
        >>> v(0.5, torch.randn(8, 2)).shape
        torch.Size([8, 2])
    """

    follows_field_convention = True

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 4,
        time_embed_dim: int = 32,
        activation: str = "silu",
        max_frequency: float = 100.0,
    ) -> None:
        super().__init__()
        for name, value, low in (("dim", dim, 1), ("hidden", hidden, 1), ("depth", depth, 1)):
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= low,
                name,
                value,
                f"an integer >= {low}",
            )
        self.dim = dim
        self.time_embedding = TimeEmbedding(time_embed_dim, max_frequency=max_frequency)
        self.net = mlp(dim + time_embed_dim, dim, hidden, depth, activation)

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        check_shape(x, "x", ndim=2, last=self.dim)
        t_b = broadcast_time(t, x)
        h = self.time_embedding(t_b)
        return self.net(torch.cat([x, h], dim=-1))
