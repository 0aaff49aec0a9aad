"""The density contract every density model in flowfields meets: :class:`DensityModel`.

A density model has one meaning everywhere:

- ``event_shape``: the shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``;
- ``sample(n, *, generator=None) -> Tensor`` of shape ``(n, *event_shape)``, in the model's
  dtype and on its device (``generator`` a ``torch.Generator`` for reproducible draws);
- ``log_prob(x) -> Tensor`` of shape ``(B,)`` for ``x`` of shape ``(B, *event_shape)``: the
  log-density in nats (``-inf`` off the support), a plain tensor. Models that compute more
  along the way (a CNF's solver cost, its base points) offer a separate documented call for
  it (``CNF.log_prob_details``).

Bad input (wrong shape, NaN or Inf, an integer, boolean or complex dtype, a dtype other than
the model's weights') raises :class:`~flowfields.errors.FlowfieldsError`; :func:`check_points`
and :func:`check_sample_count` do those checks once for every model. Every density model is
registered in ``tests/test_contracts.py``, which checks all of this, plus normalisation by
quadrature, samples against ``log_prob`` by a binned goodness-of-fit test, gradients and a
``state_dict`` round trip.

Example:
    >>> import torch
    >>> from flowfields.density import DensityModel
    >>> from flowfields.matching import StandardNormal
    >>> model = StandardNormal(2)
    >>> isinstance(model, DensityModel)
    True
    >>> model.log_prob(model.sample(4, generator=torch.Generator().manual_seed(0))).shape
    torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from flowfields.errors import check, check_finite

__all__ = ["DensityModel", "check_points", "check_sample_count", "weights_dtype"]


@runtime_checkable
class DensityModel(Protocol):
    """A probability density with sampling (see the module docs for the full contract).

    Attributes:
        event_shape: shape of one sample.
    """

    event_shape: tuple[int, ...]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples, shape ``(n, *event_shape)``."""
        ...

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x`` of shape ``(B, *event_shape)``, shape ``(B,)``."""
        ...


def check_sample_count(n: Any, argument: str = "n") -> None:
    """Raise FlowfieldsError unless ``n`` is a positive integer (a number of samples)."""
    check(
        isinstance(n, int) and not isinstance(n, bool) and n > 0,
        argument,
        n,
        "a positive integer number of samples",
    )


def weights_dtype(module: Any) -> torch.dtype | None:
    """dtype of the first floating parameter (else buffer) of an ``nn.Module``; None if none."""
    if not isinstance(module, torch.nn.Module):
        return None
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def check_points(
    x: Any,
    event_shape: Sequence[int],
    argument: str = "x",
    *,
    dtype: torch.dtype | None = None,
    allow_empty: bool = True,
    finite: bool = True,
) -> None:
    """Validate a batch of points for ``log_prob``: shape ``(B, *event_shape)``, real floating
    dtype (``dtype`` if given: the model's), finite values, and ``B > 0`` unless allowed.

    Raises:
        FlowfieldsError: naming ``argument``, what was given and what was expected.
    """
    shape = tuple(int(s) for s in event_shape)
    want = f"a batch of shape (B, {', '.join(map(str, shape))})" if shape else "shape (B,)"
    check(isinstance(x, Tensor), argument, x, f"a torch.Tensor, {want}")
    check(
        x.ndim == 1 + len(shape) and tuple(x.shape[1:]) == shape,
        argument,
        x,
        want,
    )
    check(
        x.is_floating_point(),
        argument,
        x,
        "a real floating-point tensor",
        hint="Integer data: convert (and dequantize) first; complex values are not points.",
    )
    if dtype is not None and x.dtype != dtype:
        check(
            False,
            argument,
            x,
            f"dtype {dtype} (the model's weights)",
            hint=f"Convert the input with .to({dtype}) or the model with .to({x.dtype}).",
        )
    check(allow_empty or x.shape[0] > 0, argument, x, f"{want} with B >= 1 (got an empty batch)")
    if finite:
        check_finite(x, argument)
