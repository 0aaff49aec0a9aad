"""Densities on S^2 with exact log-densities and samplers: vMF mixtures (with an EM fit, the
classical baseline of the PPD experiments) and the ring-and-blobs density of ``ppd-sphere``.

Banerjee, Dhillon, Ghosh, Sra, "Clustering on the Unit Hypersphere using von Mises-Fisher
Distributions" (JMLR 2005) for EM, with their approximation ``kappa ~ r (3 - r^2) / (1 - r^2)``
of the M-step on S^2. Each density is an ``nn.Module`` holding its parameters as buffers (so
``.to(dtype)`` sets the dtype of its samples and ``state_dict`` saves it) and meets the density
contract of :mod:`flowfields.density` (``event_shape``, ``sample``, ``log_prob``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowfields.density import check_sample_count
from flowfields.errors import check
from flowfields.manifolds import Sphere
from flowfields.ppd.kernels import _tangent_frame, log_vmf_normalizer, sample_vmf_s2

__all__ = [
    "RingAndBlobs",
    "VMFMixture",
    "fit_vmf_mixture",
    "random_vmf_mixture",
    "ring_and_blobs",
]


def _generator_device(generator: torch.Generator | None) -> torch.device | str:
    return generator.device if generator is not None else "cpu"


class VMFMixture(nn.Module):
    """``sum_k w_k vMF(x; mu_k, kappa_k)`` on S^2.

    Args:
        weights: (K,) positive (normalised here); mus: (K, 3) unit vectors; kappas: (K,) >= 0.
    """

    weights: Tensor
    mus: Tensor
    kappas: Tensor

    def __init__(self, weights: Tensor, mus: Tensor, kappas: Tensor) -> None:
        super().__init__()
        k = weights.shape[0]
        check(weights.ndim == 1 and bool((weights > 0).all()), "weights", weights, "(K,) > 0")
        check(mus.shape == (k, 3), "mus", mus, f"unit vectors of shape ({k}, 3)")
        check(kappas.shape == (k,) and bool((kappas >= 0).all()), "kappas", kappas, f"({k},) >= 0")
        self.manifold = Sphere(2)
        self.manifold.check_point(mus, "mus")
        self.event_shape = torch.Size([3])
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("mus", mus.clone())
        self.register_buffer("kappas", kappas.clone())

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the area of S^2, shape (B,), in the dtype of ``x``."""
        self.manifold.check_point(x)
        w, mu, ka = (a.to(x) for a in (self.weights, self.mus, self.kappas))
        comp = ka * (x @ mu.T) + log_vmf_normalizer(ka, 2) + torch.log(w)
        return torch.logsumexp(comp, -1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples, shape (n, 3), in the dtype and on the device of the buffers."""
        check_sample_count(n)
        on = _generator_device(generator)
        w, mu, ka = (a.to(on) for a in (self.weights, self.mus, self.kappas))
        idx = torch.multinomial(w, n, replacement=True, generator=generator)
        return sample_vmf_s2(mu[idx], ka[idx], generator).to(self.mus.device)


def fit_vmf_mixture(
    x: Tensor, k: int, *, iters: int = 100, generator: torch.Generator | None = None
) -> VMFMixture:
    """EM for a ``k``-component vMF mixture on S^2 (means initialised at random data points)."""
    Sphere(2).check_point(x)
    check(isinstance(k, int) and 1 <= k <= x.shape[0], "k", k, "an integer in [1, len(x)]")
    x = x.to(torch.float64)
    n = x.shape[0]
    mus = x[torch.randperm(n, generator=generator)[:k]].clone()
    kappas = torch.full((k,), 1.0, dtype=torch.float64)
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
    for _ in range(iters):
        comp = kappas * (x @ mus.T) + log_vmf_normalizer(kappas, 2) + torch.log(weights)
        resp = torch.softmax(comp, -1)  # (n, k)
        nk = resp.sum(0).clamp_min(1e-10)
        weights = (nk / n).clamp_min(1e-12)
        s = resp.T @ x  # (k, 3)
        norm = s.norm(dim=-1).clamp_min(1e-12)
        mus = s / norm[:, None]
        r = (norm / nk).clamp(1e-6, 1 - 1e-6)
        kappas = (r * (3 - r * r) / (1 - r * r)).clamp(0, 1e5)
    return VMFMixture(weights, mus, kappas)


def random_vmf_mixture(
    k: int, kappa_range: tuple[float, float], generator: torch.Generator | None = None
) -> VMFMixture:
    """A random ``k``-component mixture: uniform means, log-uniform concentrations, equal
    weights (float64)."""
    mus = Sphere(2).random_base(k, generator, dtype=torch.float64)
    lo, hi = math.log(kappa_range[0]), math.log(kappa_range[1])
    u = torch.rand(k, generator=generator, dtype=torch.float64)
    return VMFMixture(
        torch.full((k,), 1.0 / k, dtype=torch.float64), mus, torch.exp(lo + (hi - lo) * u)
    )


class RingAndBlobs(nn.Module):
    """A tilted ring ``exp(-beta (<a, x> - c)^2) / Z`` (weight ``w_ring``) plus a vMF mixture
    on S^2, with exact log-density and sampler (the data of ``ppd-sphere``).

    ``Z = 2 pi int_{-1}^{1} exp(-beta (z - c)^2) dz`` in closed form (erf); the ring is
    sampled as a truncated normal in ``z = <a, x>`` (rejection) and a uniform azimuth.

    Args:
        axis: (3,) unit vector a; c: the ring's height in [-1, 1]; beta: its sharpness > 0;
        w_ring: its weight in (0, 1); blobs: the :class:`VMFMixture` (weight ``1 - w_ring``).
    """

    axis: Tensor

    def __init__(
        self, axis: Tensor, c: float, beta: float, w_ring: float, blobs: VMFMixture
    ) -> None:
        super().__init__()
        Sphere(2).check_point(axis.reshape(1, -1), "axis")
        check(-1 <= c <= 1, "c", c, "a height in [-1, 1]")
        check(beta > 0, "beta", beta, "a sharpness > 0")
        check(0 < w_ring < 1, "w_ring", w_ring, "a weight in (0, 1)")
        check(isinstance(blobs, VMFMixture), "blobs", blobs, "a VMFMixture")
        self.event_shape = torch.Size([3])
        self.manifold = Sphere(2)
        self.register_buffer("axis", axis.reshape(3).clone())
        self.c, self.beta, self.w_ring = float(c), float(beta), float(w_ring)
        self.blobs = blobs

    def _ring_log_z(self) -> float:
        s = math.sqrt(self.beta)
        erf = math.erf(s * (1 - self.c)) - math.erf(s * (-1 - self.c))
        return math.log(math.pi * math.sqrt(math.pi / self.beta) * erf)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the area of S^2, shape (B,), in the dtype of ``x``."""
        self.manifold.check_point(x)
        z = x @ self.axis.to(x)
        ring = -self.beta * (z - self.c) ** 2 - self._ring_log_z() + math.log(self.w_ring)
        blobs = self.blobs.log_prob(x) + math.log(1 - self.w_ring)
        return torch.logaddexp(ring, blobs)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples (n, 3), in the dtype and on the device of the buffers."""
        check_sample_count(n)
        dt, on = torch.float64, _generator_device(generator)
        n_ring = int(
            torch.binomial(
                torch.tensor(float(n), device=on),
                torch.tensor(self.w_ring, device=on),
                generator=generator,
            )
        )
        z = torch.empty(0, dtype=dt, device=on)
        while z.numel() < n_ring:  # the truncated normal on [-1, 1] by rejection
            cand = torch.randn(2 * n_ring + 8, generator=generator, dtype=dt, device=on)
            cand = self.c + cand / math.sqrt(2 * self.beta)
            z = torch.cat([z, cand[(cand > -1) & (cand < 1)]])
        z = z[:n_ring]
        phi = 2 * math.pi * torch.rand(n_ring, generator=generator, dtype=dt, device=on)
        axis = self.axis.to(dtype=dt, device=on)
        e1, e2 = _tangent_frame(axis[None].expand(n_ring, 3))
        side = torch.cos(phi)[:, None] * e1 + torch.sin(phi)[:, None] * e2
        ring = z[:, None] * axis + (1 - z * z).sqrt()[:, None] * side
        blobs = self.blobs.sample(n - n_ring, generator).to(dtype=dt, device=on)
        x = torch.cat([self.manifold.projx(ring), blobs])
        x = x[torch.randperm(n, generator=generator, device=on)]
        return x.to(dtype=self.axis.dtype, device=self.axis.device)


def ring_and_blobs(generator: torch.Generator, kappa: float = 30.0) -> RingAndBlobs:
    """A random tilted ring (beta = 40, c = 0.3, weight 0.4) and 3 vMF blobs of ``kappa``
    (float64)."""
    s2 = Sphere(2)
    axis = s2.random_base(1, generator, dtype=torch.float64)[0]
    mus = s2.random_base(3, generator, dtype=torch.float64)
    blobs = VMFMixture(
        torch.full((3,), 1 / 3, dtype=torch.float64),
        mus,
        torch.full((3,), kappa, dtype=torch.float64),
    )
    return RingAndBlobs(axis, 0.3, 40.0, 0.4, blobs)
