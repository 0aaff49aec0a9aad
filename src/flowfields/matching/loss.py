"""The conditional flow matching (CFM) loss of Lipman et al. (arXiv:2210.02747), eq. (9).

Convention: t = 0 is noise ``x_0 ~ N(0, I)``, t = 1 is data ``x_1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from flowfields.errors import check, check_finite, check_shape
from flowfields.paths import GaussianPath

__all__ = ["cfm_loss", "resolve_path"]


def resolve_path(path: Any) -> Any:
    """Return a probability-path object, building it by name if ``path`` is a string.

    Args:
        path: an object with ``sample(x_0, x_1, t)`` and ``sample_t(n, generator)`` (e.g.
            :class:`flowfields.paths.CondOTPath`), or one of the names ``"condot"``, ``"vp"``,
            ``"ve"`` understood by :func:`flowfields.paths.get_path`.

    Raises:
        FlowfieldsError: for an unknown name or an object that is not a path.
    """
    if isinstance(path, str):
        from flowfields.paths import get_path

        return get_path(path)
    check(
        hasattr(path, "sample") and hasattr(path, "sample_t"),
        "path",
        path,
        "a probability path (an object with sample(x_0, x_1, t) and sample_t(n)) or one of "
        "'condot', 'vp', 've'",
    )
    return path


def cfm_loss(
    v: Callable[[Tensor, Tensor], Tensor],
    path: Any,
    x_1: Tensor,
    x_0: Tensor | None = None,
    t: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Conditional flow matching loss ``E_{t, x_0, x_1} ||v(t, x_t) - u_t(x_t | x_1)||^2``.

    The squared norm is summed over all non-batch dimensions and averaged over the batch,
    as in eq. (9) of the paper. Its gradient equals that of the (intractable) marginal flow
    matching loss (Theorem 2), so minimising it regresses ``v`` onto the marginal field.

    Args:
        v: vector field called as ``v(t, x_t)`` with ``t`` of shape (B,) and ``x_t`` of
            shape (B, *dims); returns (B, *dims).
        path: a conditional probability path from :mod:`flowfields.paths` (or its name).
        x_1: data batch, shape (B, *dims).
        x_0: noise batch of the same shape; drawn from N(0, I) when omitted.
        t: times, shape (B,); drawn with ``path.sample_t`` when omitted.
        generator: optional torch generator for the noise and times drawn here.

    Returns:
        Scalar loss tensor (differentiable w.r.t. the parameters of ``v``).

    Raises:
        FlowfieldsError: on wrong shapes, NaN/Inf in the data, or an unknown path name.

    Example:
        >>> loss = cfm_loss(field, CondOTPath(), x_1)
        >>> loss.backward()
    """
    path = resolve_path(path)
    check_shape(x_1, "x_1")
    check(x_1.ndim >= 2, "x_1", x_1, "a batch of shape (B, *dims) with at least 2 dimensions")
    check(x_1.is_floating_point(), "x_1", x_1, "a floating-point tensor")
    gaussian = isinstance(path, GaussianPath)  # checks finite data and t itself
    if not gaussian and not math.isfinite(float(x_1.detach().sum())):  # full check on failure
        check_finite(x_1, "x_1")
    batch = x_1.shape[0]
    if x_0 is None:
        device = generator.device if generator is not None else x_1.device
        x_0 = torch.randn(x_1.shape, generator=generator, dtype=x_1.dtype, device=device)
        x_0 = x_0.to(x_1.device)
    else:
        check_shape(x_0, "x_0")
        check(x_0.shape == x_1.shape, "x_0", x_0, f"the shape of x_1, {tuple(x_1.shape)}")
        if not gaussian:
            check_finite(x_0, "x_0")
    if t is None:
        t = path.sample_t(batch, generator=generator)
    check_shape(t, "t")
    check(t.shape == (batch,), "t", t, f"a tensor of shape ({batch},), one time per example")
    t = t.to(device=x_1.device, dtype=x_1.dtype)
    if not gaussian:
        check(bool(((t >= 0) & (t <= 1)).all()), "t", t, "times in [0, 1]")
    sample = path.sample(x_0, x_1, t)
    pred = v(sample.t, sample.x_t)
    check(
        isinstance(pred, Tensor) and pred.shape == sample.u_t.shape,
        "v(t, x_t)",
        pred,
        f"a tensor of shape {tuple(sample.u_t.shape)}",
    )
    return (pred - sample.u_t).pow(2).reshape(batch, -1).sum(dim=1).mean()
