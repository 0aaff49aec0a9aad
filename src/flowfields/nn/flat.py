"""Adapters between flat vector fields and event shapes."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FlatField"]


class FlatField(nn.Module):
    """A vector field on flat vectors ``(B, D)`` used on events of any shape ``(B, *shape)``.

    Args:
        field: ``field(t, x)`` with ``x`` of shape ``(B, D)``, ``D = prod(shape)``.

    Example:
        >>> import torch
        >>> from flowfields.nn import MLPField
        >>> v = FlatField(MLPField(64, hidden=16, depth=2))
        >>> v(torch.zeros(3), torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """``field(t, x.flatten(1))`` reshaped back to ``x.shape``."""
        return self.field(t, x.reshape(x.shape[0], -1)).reshape(x.shape)
