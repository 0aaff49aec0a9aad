"""Isotropic normal densities: the t = 0 base of every CNF here.

Both are :class:`~flowfields.density.DensityModel` s. They hold no weights, only a
non-persistent buffer that gives them a dtype and a device (``.to(torch.float64)``,
``.to("cuda")``), so their samples come out where the model lives; their ``state_dict`` is
empty.

Example:
    >>> import torch
    >>> from flowfields.matching import IsotropicNormal
    >>> base = IsotropicNormal((1, 2, 2), std=2.0).double()
    >>> base.sample(3).dtype, base.sample(3).shape
    (torch.float64, torch.Size([3, 1, 2, 2]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.density import check_points, check_sample_count
from flowfields.errors import check

__all__ = ["IsotropicNormal", "StandardNormal", "base_for_path", "event_shape_of"]


def event_shape_of(dim: int | Sequence[int], argument: str = "dim") -> tuple[int, ...]:
    """A positive int ``d`` as ``(d,)``, or a shape of positive ints as a tuple."""
    if isinstance(dim, int) and not isinstance(dim, bool):
        check(dim > 0, argument, dim, "a positive integer or a shape such as (1, 8, 8)")
        return (dim,)
    want = "a positive integer or a shape of positive integers such as (1, 8, 8)"
    if not isinstance(dim, Sequence) or isinstance(dim, str):
        check(False, argument, dim, want)
    assert isinstance(dim, Sequence)
    ok = len(dim) > 0
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dim)
    check(ok, argument, dim, want)
    return tuple(int(d) for d in dim)


class IsotropicNormal(nn.Module):
    """Isotropic normal density N(0, std^2 I) over an event shape.

    The base of a CNF trained on the VE path (whose t = 0 marginal is about
    N(0, sigma_max^2 I)); :class:`StandardNormal` is the ``std = 1`` case.

    Args:
        event_shape: shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``.
        std: standard deviation, > 0.
    """

    _like: Tensor

    def __init__(self, event_shape: int | Sequence[int], std: float = 1.0) -> None:
        super().__init__()
        check(
            isinstance(std, (int, float)) and math.isfinite(std) and std > 0,
            "std",
            std,
            "a positive finite standard deviation",
        )
        self.event_shape = event_shape_of(event_shape, "event_shape")
        self.dim = math.prod(self.event_shape)
        self.std = float(std)
        # dtype and device only (non-persistent: not in the state_dict)
        self.register_buffer("_like", torch.zeros(()), persistent=False)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` samples, shape (n, *event_shape), in ``dtype`` on ``device`` (default:
        the module's); drawn on the generator's device when one is given."""
        check_sample_count(n)
        dtype = dtype or self._like.dtype
        device = device if device is not None else self._like.device
        where = generator.device if generator is not None else device
        x = torch.randn((n, *self.event_shape), generator=generator, dtype=dtype, device=where)
        x = x * self.std
        return x.to(device)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x`` of shape (B, *event_shape); returns (B,)."""
        check_points(x, self.event_shape)
        return self._log_prob(x)

    def _log_prob(self, x: Tensor) -> Tensor:
        """:meth:`log_prob` without the checks (for callers that validated ``x``)."""
        flat = x.reshape(x.shape[0], -1) / self.std
        return -0.5 * flat.pow(2).sum(dim=1) - self.dim * (
            0.5 * math.log(2 * math.pi) + math.log(self.std)
        )

    def entropy(self) -> float:
        """Differential entropy in nats."""
        return self.dim * (0.5 * math.log(2 * math.pi * math.e) + math.log(self.std))

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, std={self.std:g}"


class StandardNormal(IsotropicNormal):
    """Standard normal density N(0, I) over an event shape (the default CNF base)."""

    def __init__(self, event_shape: int | Sequence[int]) -> None:
        super().__init__(event_shape, std=1.0)


def base_for_path(path: Any, event_shape: int | Sequence[int]) -> IsotropicNormal:
    """The t = 0 density a CNF trained on ``path`` should start from.

    N(0, I) for CondOT and VP; N(0, sigma_max^2 I) for VE (``path.prior_std``).
    """
    std = float(getattr(path, "prior_std", 1.0))
    return StandardNormal(event_shape) if std == 1.0 else IsotropicNormal(event_shape, std)
