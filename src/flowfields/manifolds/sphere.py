"""The sphere S^n = {x in R^(n+1) : |x| = 1} with the round metric.

Closed forms (e.g. Absil, Mahony, Sepulchre, "Optimization Algorithms on Matrix Manifolds",
2008, Sec. 5.4): ``exp_x(u) = cos|u| x + sin|u| u/|u|``, ``log_x(y) = theta P_x(y - x) /
|P_x(y - x)|`` with ``theta = d(x, y)``, ``d(x, y) = 2 atan2(|x - y|, |x + y|)`` (stable at
0 and pi). The ratios ``sin|u|/|u|`` and ``theta / sin(theta)`` go through ``torch.sinc``,
exact and differentiable at 0 in every dtype (no epsilon switch); ``log_x`` is singular only
at the antipode ``y = -x``, where the geodesic is not unique.

The tangent projection ``P_x u = u - <x, u> x / |x|^2`` is homogeneous of degree 0 in ``x``,
so the ambient divergence of ``P_x v(x)`` at ``|x| = 1`` is the Riemannian divergence of the
tangent field (see :mod:`flowfields.ppd`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowfields.manifolds.base import Manifold, check_dim, like

__all__ = ["Sphere", "sphere_log_area"]


def sphere_log_area(n: int) -> float:
    """``log |S^n|`` with ``|S^n| = 2 pi^((n+1)/2) / Gamma((n+1)/2)`` (4 pi for S^2)."""
    return math.log(2.0) + 0.5 * (n + 1) * math.log(math.pi) - math.lgamma(0.5 * (n + 1))


def _sinc(r: Tensor) -> Tensor:
    """``sin r / r`` (1 at 0, smooth, NaN-free gradients: ``torch.sinc``)."""
    return torch.sinc(r / math.pi)


class Sphere(Manifold):
    """The unit sphere S^n in R^(n+1) (``Sphere(2)`` is the 2-sphere in R^3).

    Example:
        >>> import torch
        >>> from flowfields.manifolds import Sphere
        >>> s2 = Sphere(2)
        >>> x = s2.random_base(4, torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> y = s2.random_base(4, torch.Generator().manual_seed(1), dtype=torch.float64)
        >>> bool(torch.allclose(s2.expmap(x, s2.logmap(x, y)), y))
        True
    """

    def __init__(self, n: int) -> None:
        self.dim = check_dim(n, "n")
        self.ambient_dim = n + 1
        self.name = f"S^{n}"

    def constraint(self, x: Tensor) -> Tensor:
        return x.norm(dim=-1) - 1

    def projx(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        xx = (x * x).sum(-1, keepdim=True)
        return u - (x * u).sum(-1, keepdim=True) / xx * x

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        r = u.norm(dim=-1, keepdim=True)
        return torch.cos(r) * x + _sinc(r) * u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        # for unit x, y: w = P_x y = y - cos(theta) x has |w| = sin(theta), so
        # log_x y = theta w / sin(theta) = w / sinc(theta) (no division by a small |w|)
        c = (x * y).sum(-1, keepdim=True)
        w = y - c * x
        theta = torch.atan2(w.norm(dim=-1, keepdim=True), c)
        return w / _sinc(theta)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return 2 * torch.atan2((x - y).norm(dim=-1), (x + y).norm(dim=-1))

    def retraction(self, x: Tensor, dx: Tensor) -> Tensor:
        """``projx(x + proju(x, dx))``: a second-order retraction (one norm, no trig)."""
        return self.projx(x + self.proju(x, dx))

    def random_base(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        dt, dev = like(generator, dtype, device)
        z = torch.randn(n, self.ambient_dim, generator=generator, dtype=dt, device=dev)
        return self.projx(z)

    def base_log_prob(self, x: Tensor) -> Tensor:
        return torch.full(x.shape[:-1], -sphere_log_area(self.dim), dtype=x.dtype, device=x.device)
