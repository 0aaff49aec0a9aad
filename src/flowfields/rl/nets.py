"""ReLU multi-layer perceptrons of the actor and critics.

:func:`flowfields.nn.mlp` offers smooth activations only (CNFs need second derivatives); SAC's
reference networks (stable-baselines3, CleanRL) use ReLU, which this builder provides in the same
layer order and initialisation.
"""

from __future__ import annotations

from torch import nn

from flowfields.errors import check

__all__ = ["relu_mlp"]


def relu_mlp(n_in: int, n_out: int | None, hidden: int, depth: int) -> nn.Sequential:
    """``Linear(n_in, hidden), ReLU, [Linear(hidden, hidden), ReLU] * (depth - 1)`` and, unless
    ``n_out`` is None, ``Linear(hidden, n_out)``. Shapes (..., n_in) -> (..., n_out or hidden)."""
    for name, v in (("n_in", n_in), ("hidden", hidden), ("depth", depth)):
        check(isinstance(v, int) and v >= 1, name, v, "a positive integer")
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    if n_out is not None:
        layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)
