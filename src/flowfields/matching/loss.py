"""The conditional flow matching (CFM) loss of Lipman et al. (arXiv:2210.02747), eq. (9).

Convention: t = 0 is the source (noise ``x_0 ~ N(0, I)`` by default), t = 1 is data ``x_1``.
The loss works for any :class:`~flowfields.paths.ProbPath`, with any source distribution and
inner product (manifold paths pass the manifold's uniform sampler and metric).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from flowfields.errors import check, check_shape
from flowfields.paths import check_path_inputs

__all__ = ["cfm_loss", "resolve_path"]


def resolve_path(path: Any) -> Any:
    """Return a probability-path object, building it by name if ``path`` is a string.

    Args:
        path: a :class:`~flowfields.paths.ProbPath` (or any object with ``sample(x_0, x_1,
            t)`` and ``sample_t(n, generator)``), or one of the names ``"condot"``, ``"vp"``,
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
    *,
    x_0: Tensor | None = None,
    t: Tensor | None = None,
    source: Callable[[int], Tensor] | None = None,
    metric: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Conditional flow matching loss ``E_{t, x_0, x_1} ||v(t, x_t) - u_t(x_t | x_1)||^2``.

    The squared norm (Euclidean: summed over all non-batch dimensions; or ``metric``) is
    averaged over the batch, as in eq. (9) of the paper. Its gradient equals that of the
    (intractable) marginal flow matching loss (Theorem 2), so minimising it regresses ``v``
    onto the marginal field.

    Args:
        v: vector field called as ``v(t, x_t)`` with ``t`` of shape (B,) and ``x_t`` of
            shape (B, *dims); returns (B, *dims).
        path: a :class:`~flowfields.paths.ProbPath` (or its name, see :func:`resolve_path`).
        x_1: data batch, shape (B, *dims).
        x_0: the t = 0 batch of the same shape; drawn with ``source`` when omitted.
        t: times, shape (B,); drawn with ``path.sample_t`` when omitted.
        source: ``source(n) -> x_0`` of shape (n, *dims) draws the t = 0 points (e.g. the
            uniform distribution of a manifold); default N(0, I) (from ``generator``).
        metric: ``metric(x, a, b) -> (B,)``, the inner product of tangent vectors ``a``, ``b``
            at the points ``x`` (e.g. a Riemannian metric); default Euclidean.
        generator: optional torch generator for the default noise and the times drawn here.

    Returns:
        Scalar loss tensor (differentiable w.r.t. the parameters of ``v``).

    Raises:
        FlowfieldsError: on wrong shapes, NaN/Inf in the data, times outside [0, 1], an
            unknown path name, or ``v`` / ``source`` / ``metric`` returning the wrong shape.

    Example:
        >>> import torch
        >>> from flowfields.matching import cfm_loss
        >>> from flowfields.nn import MLPField
        >>> from flowfields.paths import CondOTPath
        >>> field = MLPField(2, hidden=16, depth=1)
        >>> loss = cfm_loss(field, CondOTPath(), torch.randn(8, 2))
        >>> loss.backward()
    """
    path = resolve_path(path)
    check_shape(x_1, "x_1")
    check(x_1.ndim >= 2, "x_1", x_1, "a batch of shape (B, *dims) with at least 2 dimensions")
    check(x_1.is_floating_point(), "x_1", x_1, "a floating-point tensor")
    check(x_1.shape[0] >= 1, "x_1", x_1, "a non-empty batch (B >= 1)")
    batch = x_1.shape[0]
    if x_0 is None:
        x_0 = _draw_source(source, x_1, generator)
    else:
        check_shape(x_0, "x_0")
        check(x_0.shape == x_1.shape, "x_0", x_0, f"the shape of x_1, {tuple(x_1.shape)}")
    if t is None:
        t = path.sample_t(batch, generator=generator)
    check_shape(t, "t")
    check(t.shape == (batch,), "t", t, f"a tensor of shape ({batch},), one time per example")
    t = t.to(device=x_1.device, dtype=x_1.dtype)
    checker = getattr(path, "check_inputs", None)  # a path's own (maybe cheaper) checks
    (checker or check_path_inputs)(x_0, x_1, t)
    sample = path.sample(x_0, x_1, t)
    pred = v(sample.t, sample.x_t)
    check(
        isinstance(pred, Tensor) and pred.shape == sample.u_t.shape,
        "v(t, x_t)",
        pred,
        f"a tensor of shape {tuple(sample.u_t.shape)}",
    )
    diff = pred - sample.u_t
    if metric is None:
        return diff.pow(2).reshape(batch, -1).sum(dim=1).mean()
    sq = metric(sample.x_t, diff, diff)
    check(
        isinstance(sq, Tensor) and sq.shape == (batch,),
        "metric(x, a, b)",
        sq,
        f"a tensor of shape ({batch},), one inner product per example",
    )
    return sq.mean()


def _draw_source(
    source: Callable[[int], Tensor] | None, x_1: Tensor, generator: torch.Generator | None
) -> Tensor:
    """The t = 0 batch: ``source(B)`` or N(0, I) from ``generator``, like ``x_1``."""
    if source is None:
        device = generator.device if generator is not None else x_1.device
        x_0 = torch.randn(x_1.shape, generator=generator, dtype=x_1.dtype, device=device)
        return x_0.to(x_1.device)
    check(callable(source), "source", source, "a callable source(n) -> x_0")
    x_0 = source(x_1.shape[0])
    check(
        isinstance(x_0, Tensor) and x_0.shape == x_1.shape,
        "source(n)",
        x_0,
        f"a tensor of the shape of x_1, {tuple(x_1.shape)}",
    )
    return x_0.to(device=x_1.device, dtype=x_1.dtype)
