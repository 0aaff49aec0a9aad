"""A Brownian motion over the weights only, padded with zeros for the noiseless coordinates."""

from __future__ import annotations

from typing import Any

import torch
import torchsde
from torch import Tensor

from flowfields.errors import check

__all__ = ["PaddedBrownian"]


class PaddedBrownian(torchsde.BaseBrownian):
    """Present a (S, P) Brownian motion as one of shape (S, before + P + after).

    The SDE-BNN drives only its P weights with noise; with torchsde's "diagonal" noise the
    Brownian motion must be as wide as the whole augmented state, whose other coordinates
    (hidden state, running KL) have zero diffusion. Padding the weights' Brownian motion with
    zeros keeps one source of noise, of shape (S, P), for every estimator and method, so
    that a fixed ``base`` gives the same weight paths under all of them (and the zeros are
    exact, not random numbers multiplied by zero). Used by :class:`~flowfields.sdebnn.SDEBNN`.

    Args:
        base: a torchsde Brownian motion of shape (S, P), e.g. ``torchsde.BrownianInterval``.
        before, after: numbers of zero channels in front of and behind the weights.

    Example:
        >>> base = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(2, 3), entropy=0)
        >>> bm = PaddedBrownian(base, before=1, after=1)
        >>> bm(0.0, 0.5).shape, float(bm(0.0, 0.5)[:, 0].abs().max())
        (torch.Size([2, 5]), 0.0)
    """

    def __init__(self, base: Any, before: int, after: int) -> None:
        super().__init__()
        check(len(tuple(base.shape)) == 2, "base", base, "a Brownian motion of shape (S, P)")
        check(before >= 0 and after >= 0, "before/after", (before, after), "integers >= 0")
        self.base = base
        self.before = int(before)
        self.after = int(after)

    def _pad(self, x: Tensor) -> Tensor:
        s = x.shape[0]
        return torch.cat([x.new_zeros(s, self.before), x, x.new_zeros(s, self.after)], dim=-1)

    def __call__(
        self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False
    ) -> Any:
        check(not (return_U or return_A), "method", "a Levy-area method", "euler/midpoint/heun")
        return self._pad(self.base(ta, tb))

    def __repr__(self) -> str:
        return f"PaddedBrownian(base={self.base!r}, before={self.before}, after={self.after})"

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def shape(self) -> tuple[int, int]:
        s, p = tuple(self.base.shape)
        return (s, self.before + p + self.after)

    @property
    def levy_area_approximation(self) -> str:
        return "none"
