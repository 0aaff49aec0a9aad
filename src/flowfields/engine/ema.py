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
        self._source: nn.Module | None = None
        self._pairs: tuple[list, list, list, list] = ([], [], [], [])

    def _pair_up(self, model: nn.Module) -> tuple[list, list, list, list]:
        # Walking the module tree every step costs more than the averaging itself on small
        # models: pair the tensors once per source model.
        if model is not self._source:
            float_e, float_n, other_e, other_n = [], [], [], []
            for e, n in zip(self.model.parameters(), model.parameters()):
                if e.dtype.is_floating_point or e.dtype.is_complex:
                    float_e.append(e)
                    float_n.append(n)
                else:
                    other_e.append(e)
                    other_n.append(n)
            for e, n in zip(self.model.buffers(), model.buffers()):
                other_e.append(e)
                other_n.append(n)
            self._source = model
            self._pairs = (float_e, float_n, other_e, other_n)
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        float_e, float_n, other_e, other_n = self._pair_up(model)
        if float_e:
            torch._foreach_lerp_(float_e, [n.detach() for n in float_n], 1.0 - self.decay)
        for e, n in zip(other_e, other_n):
            e.copy_(n)

    def state_dict(self) -> dict:
        """The averaged model's state dict."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the averaged weights."""
        self.model.load_state_dict(state)
