"""Geodesic conditional paths on manifolds (Riemannian flow matching's path).

Chen & Lipman, "Flow Matching on General Geometries" (arXiv:2302.03660), used as the
baseline of the PPD experiments (Ben-Hamu et al., arXiv:2207.04711): with ``x_0`` from the
base (uniform) density and ``x_1`` data, ``x_t = exp_{x_0}(t log_{x_0} x_1)`` and its velocity
``u_t = d/dt x_t``, computed by a forward-mode JVP in t (exact, one extra pass).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.paths.base import PathSample, ProbPath, check_times

__all__ = ["GeodesicPath"]


class GeodesicPath(ProbPath):
    """``x_t = exp_{x_0}(t log_{x_0}(x_1))``, ``u_t = d/dt x_t`` (a tangent vector at x_t).

    Args:
        manifold: a :class:`~flowfields.manifolds.Manifold`.

    Example:
        >>> import torch
        >>> from flowfields.manifolds import Sphere
        >>> from flowfields.paths import GeodesicPath
        >>> s2 = Sphere(2)
        >>> path = GeodesicPath(s2)
        >>> x0, x1 = s2.random_base(3, dtype=torch.float64), s2.random_base(3, dtype=torch.float64)
        >>> s = path.sample(x0, x1, torch.full((3,), 0.5, dtype=torch.float64))
        >>> bool(torch.allclose(s2.norm(s.x_t, s.u_t), s2.dist(x0, x1)))   # constant speed
        True
    """

    name = "geodesic"

    def __init__(self, manifold: Any) -> None:
        from flowfields.manifolds import Manifold

        check(isinstance(manifold, Manifold), "manifold", manifold, "a flowfields Manifold")
        self.manifold = manifold

    def check_inputs(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> None:
        self.manifold.check_point(x_0, "x_0")
        self.manifold.check_point(x_1, "x_1")
        check_times(t, x_1.shape[0])

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor | float) -> PathSample:
        m = self.manifold
        t_b, _ = check_times(t, x_1.shape[0])
        t_b = t_b.to(dtype=x_1.dtype, device=x_1.device)
        direction = m.logmap(x_0, x_1)

        def point(s: Tensor) -> Tensor:
            return m.expmap(x_0, s[:, None] * direction)

        out = torch.func.jvp(point, (t_b,), (torch.ones_like(t_b),))
        x_t, u_t = out[0], out[1]
        return PathSample(t=t_b, x_t=x_t, u_t=m.proju(x_t, u_t), x_0=x_0, x_1=x_1)
