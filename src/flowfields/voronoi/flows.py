"""The flows of the Voronoi package come from zuko (coupling-free autoregressive splines).

:func:`make_flow` builds the density ``p(z)`` of the dequantizers and the per-cell downstream
flows of :class:`~flowfields.voronoi.VoronoiMixture`; :func:`sample_flow` draws from a zuko
flow with a ``torch.Generator`` (zuko's own ``sample`` uses the global RNG).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowfields.errors import check

__all__ = ["FLOW_KINDS", "make_flow", "sample_flow"]

#: Flow families :func:`make_flow` offers (zuko classes).
FLOW_KINDS = ("nsf", "maf")


def make_flow(
    features: int,
    context: int = 0,
    *,
    kind: str = "nsf",
    transforms: int = 2,
    hidden: tuple[int, ...] = (32, 32),
) -> Any:
    """A zuko normalizing flow on R^features with a standard-normal base.

    Args:
        features: event size (>= 2 for ``"maf"``/``"nsf"`` to be expressive; 1 works).
        context: size of the conditioning vector (0: unconditional, call ``flow()``).
        kind: ``"nsf"`` (neural spline flow, 8 bins) or ``"maf"`` (affine autoregressive).
        transforms: number of autoregressive transforms; hidden: the MADE widths.

    Returns:
        a ``zuko.flows.Flow``: ``flow(c)`` is a distribution with ``log_prob`` / ``rsample``.
    """
    import zuko

    check(kind in FLOW_KINDS, "kind", kind, f"one of {FLOW_KINDS}")
    check(isinstance(features, int) and features >= 1, "features", features, "an integer >= 1")
    check(isinstance(context, int) and context >= 0, "context", context, "an integer >= 0")
    cls = zuko.flows.NSF if kind == "nsf" else zuko.flows.MAF
    return cls(features, context, transforms=transforms, hidden_features=tuple(hidden))


def sample_flow(
    flow: Any, n: int, context: Tensor | None = None, *, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` samples of a zuko flow (``context`` (n, C) or None), shape (n, features).

    Draws the standard-normal base with ``generator`` and inverts the flow's transform.
    """
    dist = flow(context) if context is not None else flow()
    base = dist.base
    loc = base.base_dist.loc
    eps = torch.randn(
        (n, loc.shape[-1]),
        generator=generator,
        dtype=loc.dtype,
        device=generator.device if generator is not None else loc.device,
    ).to(loc.device)
    return dist.transform.inv(loc + base.base_dist.scale * eps)
