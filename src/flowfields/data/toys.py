"""Two-dimensional toy distributions, generated in code, with exact densities where they exist.

The toys follow the usual scale of the continuous-normalizing-flow literature (FFJORD,
Flow Matching): about [-4, 4]^2. Each is a :class:`Toy2D` with ``sample(n, generator=None)``
and, where a closed form exists, ``log_prob(x)`` and ``entropy`` (nats):

============  ==========================================  ===============  ====================
name          definition                                  log_prob         entropy
============  ==========================================  ===============  ====================
checkerboard  uniform on 8 squares of side 2 in [-4, 4]^2  exact: -ln 32    exact: ln 32 = 3.466
8gaussians    8 isotropic Gaussians on a circle           exact (mixture)  quadrature (float64)
rings         4 noisy circles (uniform angle * Gaussian)  exact (Bessel)   quadrature (float64)
2spirals      two noisy spiral arms                       none             none
moons         two noisy half circles                      none             none
pinwheel      5 curved Gaussian arms                      none             none
============  ==========================================  ===============  ====================

``log_prob`` raises :class:`~flowfields.errors.FlowfieldsError` for toys without a closed
form. Quadrature entropies are computed once (float64 trapezoid rule on a fine grid, accurate
to better than 1e-6 nats) and cached.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cached_property

import torch
from torch import Tensor

from flowfields.errors import FlowfieldsError, check, check_finite, check_shape

__all__ = [
    "TOYS",
    "Checkerboard",
    "EightGaussians",
    "Moons",
    "Pinwheel",
    "Rings",
    "Toy2D",
    "TwoSpirals",
    "get_toy",
    "support_fraction",
]

#: Names accepted by :func:`get_toy`.
TOYS = ("checkerboard", "8gaussians", "2spirals", "moons", "pinwheel", "rings")


class Toy2D(ABC):
    """A distribution on R^2 with ``sample`` and (where known) ``log_prob`` and ``entropy``.

    Toys with a closed-form density are :class:`~flowfields.density.DensityModel` s
    (``sample(n, generator=...)``, ``log_prob(x)``, ``event_shape``); they hold no weights and
    take any floating dtype (``log_prob`` answers in the input's dtype, ``sample`` in
    ``dtype``, default torch's default dtype).

    Attributes:
        name: the name :func:`get_toy` knows it by.
        dim: always 2.
        event_shape: always ``(2,)``.
        has_log_prob: whether :meth:`log_prob` has a closed form.
    """

    name: str = "toy"
    dim: int = 2
    event_shape: tuple[int, ...] = (2,)
    has_log_prob: bool = False

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` samples, shape (n, 2).

        Drawn in float64 on the generator's device (CPU by default), then cast to ``dtype``
        (default: torch's default dtype) and moved to ``device``.
        """
        check(isinstance(n, int) and not isinstance(n, bool) and n >= 0, "n", n, "an integer >= 0")
        dev = generator.device if generator is not None else torch.device("cpu")
        x = self._sample64(n, generator, dev)
        return x.to(dtype=dtype or torch.get_default_dtype(), device=device or x.device)

    @abstractmethod
    def _sample64(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """float64 samples, shape (n, 2)."""

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density (nats) at ``x`` (n, 2) -> (n,).

        Raises:
            FlowfieldsError: if this toy has no closed-form density.
        """
        raise FlowfieldsError(
            f"log_prob: the {self.name!r} toy has no closed-form density; toys with one: "
            f"{', '.join(n for n in TOYS if _CLASSES[n].has_log_prob)}."
        )

    @property
    def entropy(self) -> float | None:
        """Differential entropy in nats, or None where not known."""
        return None

    @staticmethod
    def _check_x(x: Tensor, finite: bool = False) -> None:
        check_shape(x, "x", ndim=2, last=2)
        check(x.is_floating_point(), "x", x, "a floating-point tensor of shape (n, 2)")
        if finite:  # log_prob; in_support counts NaN / Inf points as off the support
            check_finite(x, "x")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _rand(n: int, g: torch.Generator | None, dev: torch.device, *shape: int) -> Tensor:
    return torch.rand(n, *shape, generator=g, dtype=torch.float64, device=dev)


def _randn(n: int, g: torch.Generator | None, dev: torch.device, *shape: int) -> Tensor:
    return torch.randn(n, *shape, generator=g, dtype=torch.float64, device=dev)


class Checkerboard(Toy2D):
    """Uniform on the 8 dark squares (side 2) of a 4x4 checkerboard covering [-4, 4]^2.

    A square with lower-left corner ``(2 i - 4, 2 j - 4)``, i, j in 0..3, belongs to the
    support when ``i + j`` is even. Total area 32, so ``log_prob = -ln 32`` on the support
    (-inf off it) and the entropy is exactly ``ln 32 = 3.4657`` nats: the floor of any
    model's NLL on this data.
    """

    name = "checkerboard"
    has_log_prob = True

    def _sample64(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        k = torch.randint(0, 8, (n,), generator=generator, device=device)
        i = k // 2  # column 0..3
        j = 2 * (k % 2) + (i % 2)  # row with i + j even
        corner = torch.stack([i, j], dim=-1).to(torch.float64) * 2.0 - 4.0
        return corner + 2.0 * _rand(n, generator, device, 2)

    def in_support(self, x: Tensor) -> Tensor:
        """Boolean mask (n,): which points of ``x`` (n, 2) lie on the checkerboard's squares."""
        self._check_x(x)
        cell = torch.floor((x.detach() + 4.0) / 2.0)
        inside = ((cell >= 0) & (cell <= 3)).all(dim=-1)
        return inside & (cell.sum(dim=-1).remainder(2) == 0)

    def log_prob(self, x: Tensor) -> Tensor:
        self._check_x(x, finite=True)
        value = torch.full(x.shape[:1], -math.log(32.0), dtype=x.dtype, device=x.device)
        return torch.where(self.in_support(x), value, torch.full_like(value, -math.inf))

    @property
    def entropy(self) -> float:
        return math.log(32.0)


class EightGaussians(Toy2D):
    """Equal mixture of 8 isotropic Gaussians centred on a circle.

    Centres ``radius * (cos(k pi / 4), sin(k pi / 4))``, k = 0..7, standard deviation ``std``;
    the defaults (radius 2 sqrt 2, std 0.5 / sqrt 2) are FFJORD's scale. ``log_prob`` is the
    exact mixture density; the entropy has no closed form and is computed by quadrature.
    """

    name = "8gaussians"
    has_log_prob = True

    def __init__(self, radius: float = 2.0 * math.sqrt(2.0), std: float = 0.5 / math.sqrt(2.0)):
        check(radius >= 0, "radius", radius, "a float >= 0")
        check(std > 0, "std", std, "a float > 0")
        self.radius = float(radius)
        self.std = float(std)

    def centers(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> Tensor:
        """The 8 centres, shape (8, 2)."""
        angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4.0)
        c = self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
        return c.to(dtype=dtype, device=device)

    def _sample64(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        k = torch.randint(0, 8, (n,), generator=generator, device=device)
        return self.centers(device=device)[k] + self.std * _randn(n, generator, device, 2)

    def log_prob(self, x: Tensor) -> Tensor:
        self._check_x(x, finite=True)
        c = self.centers(dtype=x.dtype, device=x.device)
        sq = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (n, 8)
        log_norm = -math.log(2.0 * math.pi * self.std**2)
        return torch.logsumexp(-0.5 * sq / self.std**2, dim=-1) + log_norm - math.log(8.0)

    @cached_property
    def entropy(self) -> float:
        h = self.std / 8.0  # converged: h = std / 5 already agrees to 1e-12
        half = self.radius + 9.0 * self.std
        g = torch.arange(-half, half + h / 2, h, dtype=torch.float64)
        xs, ys = torch.meshgrid(g, g, indexing="ij")
        pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
        lp = torch.cat([self.log_prob(chunk) for chunk in pts.split(1 << 18)])
        return float(-(lp.exp() * lp).sum() * h * h)


class Rings(Toy2D):
    """Equal mixture of noisy circles: uniform angle on radius ``r_k``, plus N(0, std^2 I).

    Radii 0.75, 1.5, 2.25, 3.0 and std 0.08 by default (FFJORD's scale). The density has the
    closed form ``p(x) = mean_k exp(-(|x|^2 + r_k^2) / (2 s^2)) I_0(|x| r_k / s^2) / (2 pi s^2)``
    (``I_0`` the modified Bessel function), evaluated stably with the scaled ``i0e``. The
    entropy is computed by radial quadrature.
    """

    name = "rings"
    has_log_prob = True

    def __init__(self, radii: tuple[float, ...] = (0.75, 1.5, 2.25, 3.0), std: float = 0.08):
        check(len(radii) >= 1 and all(r >= 0 for r in radii), "radii", radii, "radii >= 0 (>= 1)")
        check(std > 0, "std", std, "a float > 0")
        self.radii = tuple(float(r) for r in radii)
        self.std = float(std)

    def _sample64(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        r = torch.tensor(self.radii, dtype=torch.float64, device=device)
        k = torch.randint(0, len(self.radii), (n,), generator=generator, device=device)
        theta = 2.0 * math.pi * _rand(n, generator, device)
        ring = r[k, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
        return ring + self.std * _randn(n, generator, device, 2)

    def _log_prob_radius(self, rho: Tensor) -> Tensor:
        r = torch.tensor(self.radii, dtype=rho.dtype, device=rho.device)
        s2 = self.std**2
        z = rho[:, None] * r[None, :] / s2
        # log I_0(z) = log i0e(z) + z, so the exponent is -(rho - r)^2 / (2 s^2)
        terms = -((rho[:, None] - r[None, :]) ** 2) / (2 * s2) + torch.log(torch.special.i0e(z))
        return (
            torch.logsumexp(terms, dim=-1) - math.log(len(self.radii)) - math.log(2 * math.pi * s2)
        )

    def log_prob(self, x: Tensor) -> Tensor:
        self._check_x(x, finite=True)
        return self._log_prob_radius(torch.linalg.vector_norm(x, dim=-1))

    @cached_property
    def entropy(self) -> float:
        h = self.std / 400.0
        rho = torch.arange(0.0, max(self.radii) + 12.0 * self.std, h, dtype=torch.float64)
        lp = self._log_prob_radius(rho)
        f = -2.0 * math.pi * rho * lp.exp() * lp
        return float(torch.trapezoid(f, dx=h))


class TwoSpirals(Toy2D):
    """Two interleaved spiral arms with uniform and Gaussian jitter (FFJORD's scale).

    Angle ``a = sqrt(u) * 3 pi`` (u uniform), point ``(-a cos a + U(0, .5), a sin a + U(0, .5))``,
    the second arm its negation, all divided by 3 and plus N(0, 0.1^2 I). No closed-form
    density.
    """

    name = "2spirals"

    def _sample64(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        a = torch.sqrt(_rand(n, generator, device)) * 3.0 * math.pi
        jitter = 0.5 * _rand(n, generator, device, 2)
        arm = torch.stack([-torch.cos(a) * a, torch.sin(a) * a], dim=-1) + jitter
        sign = torch.randint(0, 2, (n, 1), generator=generator, device=device) * 2.0 - 1.0
        return sign * arm / 3.0 + 0.1 * _randn(n, generator, device, 2)


class Moons(Toy2D):
    """Two interleaved half circles with Gaussian noise (std 0.1), scaled by 2 and centred.

    Outer: ``(cos a, sin a)``, inner: ``(1 - cos a, 0.5 - sin a)``, a uniform in [0, pi];
    then ``2 x + (-1, -0.2)``. No closed-form density.
    """

    name = "moons"

    def __init__(self, noise: float = 0.1) -> None:
        check(noise >= 0, "noise", noise, "a float >= 0")
        self.noise = float(noise)

    def _sample64(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        a = math.pi * _rand(n, generator, device)
        outer = torch.stack([torch.cos(a), torch.sin(a)], dim=-1)
        inner = torch.stack([1.0 - torch.cos(a), 0.5 - torch.sin(a)], dim=-1)
        which = torch.randint(0, 2, (n, 1), generator=generator, device=device).bool()
        x = torch.where(which, inner, outer) + self.noise * _randn(n, generator, device, 2)
        return 2.0 * x + torch.tensor([-1.0, -0.2], dtype=torch.float64, device=device)


class Pinwheel(Toy2D):
    """Curved Gaussian arms: radial std 0.3, tangential std 0.1, 5 arms, rate 0.25, scale 2.

    Features ``f = (1 + 0.3 e_1, 0.1 e_2)`` are rotated by ``2 pi k / 5 + rate * exp(f_1)``
    for arm k and scaled by 2. No closed-form density.
    """

    name = "pinwheel"

    def __init__(self, arms: int = 5, radial_std: float = 0.3, tangential_std: float = 0.1):
        check(isinstance(arms, int) and arms >= 1, "arms", arms, "an integer >= 1")
        self.arms = arms
        self.radial_std = float(radial_std)
        self.tangential_std = float(tangential_std)
        self.rate = 0.25

    def _sample64(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        std = torch.tensor([self.radial_std, self.tangential_std], dtype=torch.float64)
        f = _randn(n, generator, device, 2) * std.to(device)
        f[:, 0] += 1.0
        k = torch.randint(0, self.arms, (n,), generator=generator, device=device)
        angle = 2.0 * math.pi * k / self.arms + self.rate * torch.exp(f[:, 0])
        c, s = torch.cos(angle), torch.sin(angle)
        return 2.0 * torch.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], dim=-1)


_CLASSES: dict[str, type[Toy2D]] = {
    "checkerboard": Checkerboard,
    "8gaussians": EightGaussians,
    "2spirals": TwoSpirals,
    "moons": Moons,
    "pinwheel": Pinwheel,
    "rings": Rings,
}


def get_toy(name: str, **kwargs: float) -> Toy2D:
    """The toy distribution called ``name`` (one of :data:`TOYS`).

    Raises:
        FlowfieldsError: for an unknown name or bad keyword arguments.
    """
    if name not in _CLASSES:
        raise FlowfieldsError(f"name: got {name!r}, expected one of {', '.join(TOYS)}.")
    try:
        return _CLASSES[name](**kwargs)
    except TypeError as e:
        raise FlowfieldsError(f"get_toy({name!r}): bad keyword arguments {kwargs}: {e}") from e


def support_fraction(x: Tensor) -> float:
    """Fraction of the points ``x`` (n, 2) on the checkerboard's support (sample quality).

    True checkerboard samples score 1; a standard normal scores about 0.50.
    """
    check(
        isinstance(x, Tensor) and x.ndim == 2 and x.shape[0] > 0 and x.shape[1] == 2,
        "x",
        x,
        "a non-empty batch of 2-D points (n, 2)",
    )
    check(x.is_floating_point(), "x", x, "a real floating-point tensor")
    mask = Checkerboard().in_support(x)
    return float(mask.to(torch.float64).mean())
