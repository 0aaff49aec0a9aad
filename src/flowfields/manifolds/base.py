"""The manifold contract: :class:`Manifold` and the flat :class:`Euclidean` space.

A manifold M of dimension ``dim`` is represented in ``ambient_dim`` real coordinates (the
sphere S^n as unit vectors of R^(n+1), the flat torus T^d as d angles). Tangent vectors at x
are ambient vectors ``u`` with ``proju(x, u) = u``; the metric is the one induced by the
ambient Euclidean inner product. Used by the PPD paper (Ben-Hamu et al., "Matching
Normalizing Flows and Probability Paths on Manifolds", ICML 2022, arXiv:2207.04711) and by
Riemannian flow matching (Chen & Lipman, arXiv:2302.03660).

Every method works on batches: points ``x`` of shape (B, ambient_dim), tangent vectors of the
same shape, scalars (B,).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from flowfields.errors import check, check_finite, check_shape

__all__ = ["Euclidean", "Manifold", "check_dim", "like", "point_tolerance", "tiny"]


def tiny(dtype: torch.dtype) -> float:
    """The epsilon below which a norm counts as zero in ``dtype`` (square root of the machine
    epsilon: 1.5e-8 in float64, 3.5e-4 in float32), where Taylor expansions take over."""
    return math.sqrt(torch.finfo(dtype).eps)


def point_tolerance(dtype: torch.dtype) -> float:
    """How far (in the manifold's own constraint, e.g. ``| |x| - 1 |``) a point may be off the
    manifold and still be accepted: 1e-5 in float64, 1e-4 in float32, 1e-2 below."""
    if dtype == torch.float64:
        return 1e-5
    if dtype == torch.float32:
        return 1e-4
    return 1e-2


class Manifold(ABC):
    """A Riemannian manifold embedded in (or charted by) R^ambient_dim.

    Attributes:
        dim: the intrinsic dimension.
        ambient_dim: the number of coordinates of a point.
        name: a short name (``"S^2"``, ``"T^2"``, ...).
    """

    dim: int
    ambient_dim: int
    name: str = "manifold"

    # -------------------------------------------------------------- geometry
    @abstractmethod
    def projx(self, x: Tensor) -> Tensor:
        """The nearest point of M (or canonical representative), shape like ``x``."""

    @abstractmethod
    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Orthogonal projection of an ambient vector ``u`` onto the tangent space at ``x``."""

    @abstractmethod
    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """The exponential map ``exp_x(u)``: the end point of the geodesic from ``x`` with
        initial velocity ``u`` (tangent at ``x``)."""

    @abstractmethod
    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """The logarithm ``log_x(y)``: the tangent vector at ``x`` with ``exp_x(log_x y) = y``
        of smallest norm."""

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """The metric ``<u, v>_x`` of tangent vectors at ``x``, shape (B,)."""
        del x
        return (u * v).sum(-1)

    def norm(self, x: Tensor, u: Tensor) -> Tensor:
        """``|u|_x``, shape (B,)."""
        return self.inner(x, u, u).clamp_min(0).sqrt()

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """Geodesic distance, shape (B,) (default: ``|log_x y|``)."""
        return self.norm(x, self.logmap(x, y))

    def retraction(self, x: Tensor, dx: Tensor) -> Tensor:
        """Where the ambient increment ``dx`` from ``x`` lands on M: ``exp_x(proju(x, dx))``
        (the hook of :func:`flowfields.integrate.odeint`'s fixed-step stepper)."""
        return self.expmap(x, self.proju(x, dx))

    # -------------------------------------------------------------- base density
    @abstractmethod
    def random_base(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``n`` samples of the base density (uniform on compact M), shape (n, ambient_dim)."""

    @abstractmethod
    def base_log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the base w.r.t. the Riemannian volume, shape (B,)."""

    # -------------------------------------------------------------- checks
    def constraint(self, x: Tensor) -> Tensor:
        """How far each point is off M, shape (B,) (0 for manifolds without a constraint)."""
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)

    def check_point(self, x: Tensor, argument: str = "x") -> None:
        """Raise :class:`~flowfields.errors.FlowfieldsError` unless ``x`` is a finite
        floating (B, ambient_dim) batch of points on M (within :func:`point_tolerance`)."""
        check_shape(x, argument, ndim=2, last=self.ambient_dim)
        check(x.is_floating_point(), argument, x, "a floating-point tensor of points")
        check_finite(x, argument)
        if x.numel():
            off = float(self.constraint(x.detach()).abs().max())
            check(
                off <= point_tolerance(x.dtype),
                argument,
                f"points up to {off:.3g} off {self.name}",
                f"points on {self.name} (within {point_tolerance(x.dtype):g})",
                hint="Project them with manifold.projx(x).",
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def check_dim(d: object, argument: str = "dim", low: int = 1) -> int:
    check(
        isinstance(d, int) and not isinstance(d, bool) and d >= low,
        argument,
        d,
        f"an integer >= {low}",
    )
    assert isinstance(d, int)
    return d


def like(
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> tuple[torch.dtype, torch.device | str | None]:
    dev = device if device is not None else (generator.device if generator is not None else None)
    return dtype or torch.get_default_dtype(), dev


class Euclidean(Manifold):
    """R^d with the standard metric; its base density is the standard normal (R^d has no
    uniform density)."""

    def __init__(self, dim: int) -> None:
        self.dim = self.ambient_dim = check_dim(dim)
        self.name = f"R^{dim}"

    def projx(self, x: Tensor) -> Tensor:
        return x

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def retraction(self, x: Tensor, dx: Tensor) -> Tensor:
        return x + dx

    def random_base(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        dt, dev = like(generator, dtype, device)
        return torch.randn(n, self.dim, generator=generator, dtype=dt, device=dev)

    def base_log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * x.pow(2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
