"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from flowfields.errors import check

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of parameters: ``p_ema <- decay * p_ema + (1 - decay) * p``.

    The average starts at the model's current weights; buffers (e.g. batch-norm statistics)
    are copied, not averaged.

    Args:
        model: the model being trained (unwrapped, not a DDP wrapper).
        decay: in [0, 1).

    Attributes:
        model: the averaged copy, in eval mode, with ``requires_grad=False``.
        decay: the decay.

    Example:
        >>> ema = EMA(net, decay=0.999)
        >>> ...  # after each optimizer step
        >>> ema.update(net)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        check(
            isinstance(decay, (int, float)) and 0.0 <= float(decay) < 1.0,
            "ema_decay",
            decay,
            "a number in [0, 1)",
        )
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        ema_p = [p for p in self.model.parameters()]
        new_p = [p.detach() for p in model.parameters()]
        floats = [
            (e, n) for e, n in zip(ema_p, new_p) if e.dtype.is_floating_point or e.dtype.is_complex
        ]
        if floats:
            e_list, n_list = zip(*floats)
            torch._foreach_lerp_(list(e_list), list(n_list), 1.0 - self.decay)
        for e, n in zip(ema_p, new_p):
            if not (e.dtype.is_floating_point or e.dtype.is_complex):
                e.copy_(n)
        for e, n in zip(self.model.buffers(), model.buffers()):
            e.copy_(n)

    def state_dict(self) -> dict:
        """The averaged model's state dict."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the averaged weights."""
        self.model.load_state_dict(state)
