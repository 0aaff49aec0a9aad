"""Products of manifolds: M_1 x M_2 x ..., coordinates concatenated, metric summed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.manifolds.base import Manifold, like

__all__ = ["Product"]


class Product(Manifold):
    """The product ``factors[0] x factors[1] x ...`` (e.g. ``Product([Sphere(2), FlatTorus(1)])``).

    A point is the concatenation of the factors' coordinates, shape (B, sum ambient_dim).
    """

    def __init__(self, factors: Sequence[Manifold]) -> None:
        check(
            isinstance(factors, (list, tuple))
            and len(factors) >= 1
            and all(isinstance(f, Manifold) for f in factors),
            "factors",
            factors,
            "a non-empty list of Manifold objects",
        )
        self.factors = tuple(factors)
        self.sizes = [f.ambient_dim for f in self.factors]
        self.dim = sum(f.dim for f in self.factors)
        self.ambient_dim = sum(self.sizes)
        self.name = " x ".join(f.name for f in self.factors)

    def _split(self, x: Tensor) -> tuple[Tensor, ...]:
        return torch.split(x, self.sizes, dim=-1)

    def _map(self, fn: Callable[[Manifold, tuple[Tensor, ...]], Tensor], *xs: Tensor) -> Tensor:
        parts = [self._split(x) for x in xs]
        return torch.cat(
            [fn(f, tuple(p[i] for p in parts)) for i, f in enumerate(self.factors)], -1
        )

    def _sum(self, fn: Callable[[Manifold, tuple[Tensor, ...]], Tensor], *xs: Tensor) -> Tensor:
        parts = [self._split(x) for x in xs]
        vals = [fn(f, tuple(p[i] for p in parts)) for i, f in enumerate(self.factors)]
        return torch.stack(vals, 0).sum(0)

    def constraint(self, x: Tensor) -> Tensor:
        return self._sum(lambda f, a: f.constraint(a[0]).abs(), x)

    def projx(self, x: Tensor) -> Tensor:
        return self._map(lambda f, a: f.projx(a[0]), x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map(lambda f, a: f.proju(a[0], a[1]), x, u)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map(lambda f, a: f.expmap(a[0], a[1]), x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._map(lambda f, a: f.logmap(a[0], a[1]), x, y)

    def retraction(self, x: Tensor, dx: Tensor) -> Tensor:
        return self._map(lambda f, a: f.retraction(a[0], a[1]), x, dx)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return self._sum(lambda f, a: f.inner(a[0], a[1], a[2]), x, u, v)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return self._sum(lambda f, a: f.dist(a[0], a[1]).pow(2), x, y).sqrt()

    def random_base(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        dt, dev = like(generator, dtype, device)
        return torch.cat(
            [f.random_base(n, generator, dtype=dt, device=dev) for f in self.factors], -1
        )

    def base_log_prob(self, x: Tensor) -> Tensor:
        return self._sum(lambda f, a: f.base_log_prob(a[0]), x)
