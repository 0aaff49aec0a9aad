"""Time points: validation of requested times and the one fixed-step grid builder.

Every solver in flowfields (:func:`~flowfields.integrate.odeint`,
:func:`~flowfields.integrate.sdeint`, the CNFs) takes its times through :func:`as_times` and
keeps them in float64 (float32 only on devices without float64, Apple MPS); fixed-step solves
step on :func:`time_grid`. Both keep ``t``'s autograd graph, so gradients with respect to the
requested times flow through the grid.

Example:
    >>> import torch
    >>> from flowfields.integrate import time_grid
    >>> grid = time_grid(torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64), 0.25)
    >>> [round(s, 6) for s in grid.tolist()]    # 0.3: 2 steps; 0.7: 3 steps
    [0.0, 0.15, 0.3, 0.533333, 0.766667, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowfields.errors import FlowfieldsError, check

__all__ = ["as_times", "describe_times", "grid_dtype", "output_indices", "step_counts", "time_grid"]


def grid_dtype(device: torch.device) -> torch.dtype:
    """float64, except on devices without it (Apple MPS: float32)."""
    return torch.float32 if device.type == "mps" else torch.float64


def as_times(t: Tensor | Sequence[float], argument: str = "t") -> Tensor:
    """Validate requested times: a 1-D floating tensor of >= 2 finite, strictly monotone times.

    Args:
        t: a tensor, or a list/tuple of floats (converted to float64).
        argument: the name used in error messages.

    Returns:
        ``t`` itself (a list becomes a float64 tensor); its dtype, device and autograd graph
        are kept.

    Raises:
        FlowfieldsError: not 1-D, fewer than 2 times, not floating point, not finite, or not
            strictly increasing / strictly decreasing.
    """
    if isinstance(t, (list, tuple)):
        check(
            all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in t),
            argument,
            t,
            "a 1-D tensor or a list of floats",
        )
        t = torch.tensor(t, dtype=torch.float64)
    check(isinstance(t, Tensor), argument, t, "a 1-D tensor of times")
    assert isinstance(t, Tensor)
    check(
        t.ndim == 1 and t.numel() >= 2,
        argument,
        t,
        "a 1-D tensor with at least 2 times (start and end)",
    )
    check(t.is_floating_point(), argument, t, "a floating-point tensor of times")
    check(bool(torch.isfinite(t).all()), argument, t, "finite times")
    d = t[1:] - t[:-1]
    check(
        bool((d > 0).all()) or bool((d < 0).all()),
        argument,
        t.tolist() if t.numel() <= 8 else t,
        "strictly increasing or strictly decreasing times",
        hint="Repeated or zigzagging times are not allowed.",
    )
    return t


def step_counts(t: Tensor, step_size: float) -> list[int]:
    """Steps per interval of ``t``: ``ceil(|t_{i+1} - t_i| / step_size)`` (at least 1).

    A tiny relative slack absorbs rounding, so 1 / 0.1 gives 10 steps, not 11.
    """
    span = (t.detach()[1:] - t.detach()[:-1]).abs().to(torch.float64).tolist()
    return [max(1, math.ceil(s / step_size * (1.0 - 1e-10))) for s in span]


def time_grid(t: Tensor, step_size: float, *, max_num_steps: int | None = None) -> Tensor:
    """The fixed-step grid: every time of ``t`` plus equal sub-steps in each interval.

    Each interval ``[t_i, t_{i+1}]`` is split into ``n_i`` equal steps (:func:`step_counts`):
    no interpolation and no ragged last step, so every requested time is a grid point.

    Args:
        t: strictly monotone times, shape ``(T,)``.
        step_size: the largest step allowed, > 0.
        max_num_steps: refuse grids with more steps than this (checked before allocating).

    Returns:
        The grid, shape ``(1 + sum_i n_i,)``, float64 on ``t``'s device (float32 on MPS),
        containing ``t`` exactly; differentiable with respect to ``t``.

    Raises:
        FlowfieldsError: times that :func:`as_times` refuses, a non-positive ``step_size`` or a
            grid longer than ``max_num_steps``.
    """
    t = as_times(t)
    check(
        isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0,
        "step_size",
        step_size,
        "a positive finite float",
    )
    counts = step_counts(t, float(step_size))
    total = sum(counts)
    if max_num_steps is not None and total > max_num_steps:
        raise FlowfieldsError(
            f"step_size: got {step_size:g}, which implies {total:,} steps over "
            f"[{float(t[0]):g}, {float(t[-1]):g}] (a time grid of {_bytes(8 * total)} before "
            f"any state), expected at most max_num_steps = {max_num_steps:,}. Use a larger "
            "step_size, or raise max_num_steps if you mean it."
        )
    t64 = t.to(dtype=grid_dtype(t.device))
    pieces = []
    for i, n in enumerate(counts):
        frac = torch.arange(n, dtype=t64.dtype, device=t64.device) / n
        pieces.append(t64[i] + (t64[i + 1] - t64[i]) * frac)
    pieces.append(t64[-1:])
    return torch.cat(pieces)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} ZB"


def output_indices(counts: Sequence[int]) -> list[int]:
    """Grid indices of the requested times for per-interval step ``counts``."""
    out = [0]
    for n in counts:
        out.append(out[-1] + n)
    return out


def describe_times(t: Any) -> str:
    """A short text for a time in messages (a float with 6 significant digits)."""
    try:
        return f"{float(t):.6g}"
    except (TypeError, ValueError, RuntimeError):
        return repr(t)
