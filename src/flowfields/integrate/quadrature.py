"""Gauss–Legendre quadrature on an interval: exact for polynomials of degree ``2n - 1``.

Nodes and weights come from :func:`numpy.polynomial.legendre.leggauss` (float64), mapped
affinely from [-1, 1] to [a, b].

Example:
    >>> import torch
    >>> from flowfields.integrate import gauss_legendre
    >>> rule = gauss_legendre(3, 0.0, 2.0)
    >>> round(float(rule.integrate(rule.nodes**5)), 12)   # int_0^2 t^5 dt = 64 / 6
    10.666666666667
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowfields.errors import check

__all__ = ["QuadratureRule", "gauss_legendre"]


@dataclass(frozen=True)
class QuadratureRule:
    """Nodes and weights of a quadrature rule: ``int_a^b f(t) dt ~ sum_i w_i f(t_i)``.

    Unpacks as ``nodes, weights = rule``.

    Attributes:
        nodes: shape (n,), in (a, b).
        weights: shape (n,), positive, summing to ``b - a``.
    """

    nodes: Tensor
    weights: Tensor

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.nodes, self.weights))

    def integrate(self, values: Tensor) -> Tensor:
        """``sum_i w_i values[i, ...]`` for values of shape (n, ...) at the nodes."""
        check(
            values.ndim >= 1 and values.shape[0] == self.nodes.shape[0],
            "values",
            values,
            f"a tensor of shape ({self.nodes.shape[0]}, ...) (one value per node)",
        )
        w = self.weights.to(values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
        return (w * values).sum(0)


def gauss_legendre(
    n: int,
    a: float = 0.0,
    b: float = 1.0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> QuadratureRule:
    """The ``n``-point Gauss–Legendre rule on ``[a, b]``.

    Args:
        n: number of nodes, >= 1; the rule integrates polynomials of degree ``<= 2n - 1``
            exactly (up to rounding).
        a, b: the interval, finite, ``a < b``.
        dtype: floating dtype of the nodes and weights (computed in float64 first).
        device: their device.

    Returns:
        :class:`QuadratureRule` with nodes in increasing order.

    Raises:
        FlowfieldsError: ``n < 1``, a bad interval or a non-floating dtype.
    """
    check(isinstance(n, int) and not isinstance(n, bool) and n >= 1, "n", n, "an integer >= 1")
    check(
        isinstance(a, (int, float)) and isinstance(b, (int, float)),
        "a, b",
        (a, b),
        "finite floats",
    )
    check(math.isfinite(a) and math.isfinite(b) and a < b, "a, b", (a, b), "finite floats, a < b")
    check(dtype.is_floating_point, "dtype", dtype, "a floating-point dtype")
    x, w = np.polynomial.legendre.leggauss(n)
    a, b = float(a), float(b)
    nodes = a + (b - a) * (x + 1) / 2
    weights = (b - a) * w / 2
    return QuadratureRule(
        nodes=torch.as_tensor(nodes, dtype=dtype, device=device),
        weights=torch.as_tensor(weights, dtype=dtype, device=device),
    )
