"""Target probability paths of PPD: kernel mixtures whose bandwidth shrinks with t.

Ben-Hamu et al., "Matching Normalizing Flows and Probability Paths on Manifolds" (ICML 2022,
arXiv:2207.04711), Sec. 4: ``p_t(x) = (1/N) sum_i k_t(x, y_i)`` over the data ``y_i`` with a
kernel whose concentration ``kappa_t`` grows from ``kappa_0 = 0`` (exactly the uniform
density, the CNF's base) to ``kappa_1`` (a kernel density estimate of the data).

- :class:`KappaSchedule`: ``kappa_t = kappa_1 t^power`` (or any callable with
  ``kappa(0) = 0``, checked).
- :class:`VMFMixturePath` on S^n (von Mises–Fisher kernels) and
  :class:`VonMisesMixturePath` on T^d (products of von Mises kernels).

Both give ``log_prob(t, x, centers)`` (differentiable in ``t`` and ``x`` through a
log-sum-exp over the centers) and ``sample(t, centers, generator)`` (one point per time,
a center drawn uniformly, then the kernel).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowfields.density import check_sample_count
from flowfields.errors import check
from flowfields.manifolds import FlatTorus, Manifold, Sphere
from flowfields.ppd.kernels import (
    log_i0,
    log_vmf_normalizer,
    sample_vmf,
    sample_vmf_s2,
    sample_von_mises,
)

__all__ = ["KappaSchedule", "KernelPath", "PathMarginal", "VMFMixturePath", "VonMisesMixturePath"]


@dataclass(frozen=True)
class KappaSchedule:
    """``kappa_t = kappa_1 t^power``: the concentration of the kernels at time t.

    Attributes:
        kappa_1: concentration at t = 1 (> 0).
        power: exponent (> 0); 1 is linear.
        fn: optional custom ``kappa(t)`` (tensor in, tensor out); must give exactly 0 at t = 0
            and be >= 0 (checked on a grid of [0, 1]).
    """

    kappa_1: float = 50.0
    power: float = 2.0
    fn: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.fn is None:
            check(self.kappa_1 > 0, "kappa_1", self.kappa_1, "a concentration > 0")
            check(self.power > 0, "power", self.power, "an exponent > 0")
            return
        check(callable(self.fn), "fn", self.fn, "a callable kappa(t)")
        grid = torch.linspace(0, 1, 33, dtype=torch.float64)
        values = self.fn(grid)
        check(
            float(values[0]) == 0.0,
            "kappa_0",
            float(values[0]),
            "exactly 0 (the t = 0 member of the path must be the uniform density)",
        )
        check(bool((values >= 0).all()), "fn", self.fn, "concentrations >= 0 on [0, 1]")

    def __call__(self, t: Tensor) -> Tensor:
        if self.fn is not None:
            return self.fn(t)
        return self.kappa_1 * t.clamp_min(0) ** self.power


class KernelPath(abc.ABC):
    """A kernel-mixture path on ``manifold`` (see the module docstring)."""

    manifold: Manifold
    schedule: KappaSchedule

    @abc.abstractmethod
    def log_kernel(self, kappa: Tensor, x: Tensor, centers: Tensor) -> Tensor:
        """``log k(x_b, c_i)`` for concentrations ``kappa`` (B,), shape (B, N)."""

    @abc.abstractmethod
    def sample_kernel(self, mu: Tensor, kappa: Tensor, generator: torch.Generator | None) -> Tensor:
        """One kernel sample per row of ``mu`` (B, ambient) at concentrations (B,)."""

    def _check(self, t: Tensor, centers: Tensor, batch: int | None = None) -> None:
        self.manifold.check_point(centers, "centers")
        check(centers.shape[0] >= 1, "centers", centers, "at least one center")
        if batch is not None:
            check(t.shape == (batch,), "t", t, f"times of shape ({batch},)")

    def log_prob(self, t: Tensor, x: Tensor, centers: Tensor) -> Tensor:
        """``log p_t(x)`` of the mixture over ``centers`` (N, ambient), shape (B,).

        Args:
            t: times (B,) in [0, 1]; x: points (B, ambient) on the manifold.
        """
        self._check(t, centers, x.shape[0])
        kappa = self.schedule(t)
        lk = self.log_kernel(kappa, x, centers)
        return torch.logsumexp(lk, dim=-1) - math.log(centers.shape[0])

    def sample(
        self, t: Tensor, centers: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """One point of ``p_t`` per time ``t`` (B,): a uniform center, then the kernel."""
        self._check(t, centers)
        idx = torch.randint(0, centers.shape[0], t.shape, generator=generator, device=t.device)
        with torch.no_grad():
            return self.sample_kernel(centers[idx], self.schedule(t.detach()), generator)

    def marginal(self, t: float, centers: Tensor) -> PathMarginal:
        """The marginal ``p_t`` over ``centers`` (N, ambient) as a density model."""
        return PathMarginal(self, t, centers)


class PathMarginal(nn.Module):
    """``p_t`` of a :class:`KernelPath` at one time ``t`` over fixed centers: a
    :class:`~flowfields.density.DensityModel` (``log_prob(x)``, ``sample(n)``). The time and
    the centers are buffers, so ``.to(dtype)`` sets the samples' dtype and a state dict
    restores the model; the centers are projected onto the manifold when used (a no-op for
    the points the constructor accepted). Ben-Hamu et al., arXiv:2207.04711.
    """

    t: Tensor
    centers: Tensor

    def __init__(self, path: KernelPath, t: float, centers: Tensor) -> None:
        super().__init__()
        check(isinstance(t, (int, float)) and 0.0 <= t <= 1.0, "t", t, "a time in [0, 1]")
        path.manifold.check_point(centers, "centers")
        self.path = path
        self.register_buffer("t", torch.tensor(float(t), dtype=centers.dtype))
        self.register_buffer("centers", centers.clone())
        self.event_shape = torch.Size([centers.shape[1]])

    def _times_and_centers(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        t = self.t.to(like).expand(n).clone()
        return t, self.path.manifold.projx(self.centers.to(like))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p_t(x)`` for points (B, ambient) on the manifold, shape (B,)."""
        self.path.manifold.check_point(x)
        t, centers = self._times_and_centers(x.shape[0], x)
        return self.path.log_prob(t, x, centers)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points of ``p_t``, shape (n, ambient), on the generator's device."""
        check_sample_count(n)
        on = generator.device if generator is not None else self.centers.device
        t, centers = self._times_and_centers(n, self.centers.to(on))
        return self.path.sample(t, centers, generator)


class VMFMixturePath(KernelPath):
    """von Mises–Fisher kernel mixture on S^n (samples: Wood's closed form on S^2, his
    rejection algorithm :func:`~flowfields.ppd.kernels.sample_vmf` on every other S^n)."""

    def __init__(self, manifold: Sphere, schedule: KappaSchedule | None = None) -> None:
        check(isinstance(manifold, Sphere), "manifold", manifold, "a Sphere")
        self.manifold = manifold
        self.schedule = schedule if schedule is not None else KappaSchedule()
        check(isinstance(self.schedule, KappaSchedule), "schedule", schedule, "a KappaSchedule")

    def log_kernel(self, kappa: Tensor, x: Tensor, centers: Tensor) -> Tensor:
        log_c = log_vmf_normalizer(kappa, self.manifold.dim)
        return kappa[:, None] * (x @ centers.T) + log_c[:, None]

    def sample_kernel(self, mu: Tensor, kappa: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.manifold.dim == 2:
            return sample_vmf_s2(mu, kappa.to(mu.dtype), generator)
        return sample_vmf(mu, kappa.to(mu.dtype), generator)


class VonMisesMixturePath(KernelPath):
    """Mixture of products of von Mises kernels on the flat torus T^d."""

    def __init__(self, manifold: FlatTorus, schedule: KappaSchedule | None = None) -> None:
        check(isinstance(manifold, FlatTorus), "manifold", manifold, "a FlatTorus")
        self.manifold = manifold
        self.schedule = schedule if schedule is not None else KappaSchedule()
        check(isinstance(self.schedule, KappaSchedule), "schedule", schedule, "a KappaSchedule")

    def log_kernel(self, kappa: Tensor, x: Tensor, centers: Tensor) -> Tensor:
        d = self.manifold.dim
        # sum_j cos(x_j - c_j) = cos x . cos c + sin x . sin c: two (B, d) x (d, N) products
        # instead of a (B, N, d) tensor of cosines (about 10x faster at d = 50, N = 1000)
        cos_sum = torch.cos(x) @ torch.cos(centers).T + torch.sin(x) @ torch.sin(centers).T
        log_c = -d * (math.log(2 * math.pi) + log_i0(kappa))
        return kappa[:, None] * cos_sum + log_c[:, None]

    def sample_kernel(self, mu: Tensor, kappa: Tensor, generator: torch.Generator | None) -> Tensor:
        return sample_von_mises(mu, kappa.to(mu.dtype)[:, None].expand_as(mu), generator)
