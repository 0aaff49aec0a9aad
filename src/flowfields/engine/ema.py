"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from flowfields.errors import check

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of parameters: ``p_ema <- β_n p_ema + (1 - β_n) p``.

    With ``warmup`` (the default) the n-th update (n = 0, 1, ...) uses
    ``β_n = min(decay, (1 + n) / (10 + n))``, otherwise ``β_n = decay``. Without the warm-up
    the average of a short run is mostly the initial weights: with decay 0.999, after 150
    updates 0.999^150 = 86% of it is the initialisation (this made the 150-step ML-CNF baseline
    of ``flow-matching-2d`` evaluate as an untrained model). The average starts at the model's
    current weights; buffers (e.g. batch-norm statistics) are copied, not averaged.

    Args:
        model: the model being trained (unwrapped, not a DDP wrapper).
        decay: in [0, 1).
        warmup: ramp the decay up over the first updates as above.

    Attributes:
        model: the averaged copy, in eval mode, with ``requires_grad=False``.
        decay: the decay.
        num_updates: updates made so far (set it when resuming: :func:`flowfields.engine.fit`
            does, from the checkpoint's step).

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(2, 2)
        >>> ema = EMA(net, decay=0.999)
        >>> ema.update(net)  # after each optimizer step
        >>> ema.num_updates, ema.current_decay()
        (1, 0.18181818181818182)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        check(
            isinstance(decay, (int, float)) and 0.0 <= float(decay) < 1.0,
            "ema_decay",
            decay,
            "a number in [0, 1)",
        )
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._source: nn.Module | None = None
        self._pairs: tuple[list, list, list, list] = ([], [], [], [])

    def _pair_up(self, model: nn.Module) -> tuple[list, list, list, list]:
        # Walking the module tree every step costs more than the averaging itself on small
        # models: pair the tensors once per source model.
        if model is not self._source:
            float_e: list[torch.Tensor] = []
            float_n: list[torch.Tensor] = []
            other_e: list[torch.Tensor] = []
            other_n: list[torch.Tensor] = []
            for e, n in zip(self.model.parameters(), model.parameters()):
                if e.dtype.is_floating_point or e.dtype.is_complex:
                    float_e.append(e)
                    float_n.append(n)
                else:
                    other_e.append(e)
                    other_n.append(n)
            for b_e, b_n in zip(self.model.buffers(), model.buffers()):
                other_e.append(b_e)
                other_n.append(b_n)
            self._source = model
            self._pairs = (float_e, float_n, other_e, other_n)
        return self._pairs

    def current_decay(self) -> float:
        """The decay ``β_n`` the next :meth:`update` uses."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        float_e, float_n, other_e, other_n = self._pair_up(model)
        beta = self.current_decay()
        self.num_updates += 1
        if float_e:
            torch._foreach_lerp_(float_e, [n.detach() for n in float_n], 1.0 - beta)
        for e, n in zip(other_e, other_n):
            e.copy_(n)

    def state_dict(self) -> dict:
        """The averaged model's state dict."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the averaged weights."""
        self.model.load_state_dict(state)
