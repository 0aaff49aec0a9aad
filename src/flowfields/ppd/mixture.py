"""Mixtures with exact densities: von Mises–Fisher on S^2 (with an EM fit) and products of
von Mises on T^d.

The vMF mixture on S^2: exact density, sampler, and EM fit (the classical
baseline of the PPD experiments; Banerjee, Dhillon, Ghosh, Sra, "Clustering on the Unit
Hypersphere using von Mises-Fisher Distributions", JMLR 2005, with their approximation
``kappa ~ r (3 - r^2) / (1 - r^2)`` of the M-step on S^2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.manifolds import Sphere
from flowfields.ppd.kernels import log_vmf_normalizer, sample_vmf_s2

__all__ = [
    "VMFMixture",
    "VonMisesMixture",
    "fit_vmf_mixture",
    "random_vmf_mixture",
    "random_von_mises_mixture",
]


class VMFMixture:
    """``sum_k w_k vMF(x; mu_k, kappa_k)`` on S^2.

    Args:
        weights: (K,) positive, summing to 1; mus: (K, 3) unit vectors; kappas: (K,) >= 0.
    """

    def __init__(self, weights: Tensor, mus: Tensor, kappas: Tensor) -> None:
        k = weights.shape[0]
        check(weights.ndim == 1 and bool((weights > 0).all()), "weights", weights, "(K,) > 0")
        check(mus.shape == (k, 3), "mus", mus, f"unit vectors of shape ({k}, 3)")
        check(kappas.shape == (k,) and bool((kappas >= 0).all()), "kappas", kappas, f"({k},) >= 0")
        self.manifold = Sphere(2)
        self.manifold.check_point(mus, "mus")
        self.weights = weights / weights.sum()
        self.mus, self.kappas = mus, kappas

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the area of S^2, shape (B,)."""
        self.manifold.check_point(x)
        w, mu, ka = (a.to(x.dtype) for a in (self.weights, self.mus, self.kappas))
        comp = ka * (x @ mu.T) + log_vmf_normalizer(ka, 2) + torch.log(w)
        return torch.logsumexp(comp, -1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples, shape (n, 3), in the dtype of ``mus``."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return sample_vmf_s2(self.mus[idx], self.kappas[idx], generator)


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


class VonMisesMixture:
    """``sum_k w_k prod_j VM(x_j; mu_kj, kappa_k)`` on T^d (exact density and sampler).

    Args:
        weights: (K,) > 0; mus: (K, d) angles; kappas: (K,) >= 0 (one per component).
    """

    def __init__(self, weights: Tensor, mus: Tensor, kappas: Tensor) -> None:
        from flowfields.manifolds import FlatTorus

        k = weights.shape[0]
        check(weights.ndim == 1 and bool((weights > 0).all()), "weights", weights, "(K,) > 0")
        check(mus.ndim == 2 and mus.shape[0] == k, "mus", mus, f"angles of shape ({k}, d)")
        check(kappas.shape == (k,) and bool((kappas >= 0).all()), "kappas", kappas, f"({k},) >= 0")
        self.manifold = FlatTorus(mus.shape[1])
        self.weights = weights / weights.sum()
        self.mus, self.kappas = mus, kappas

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the flat volume of T^d, shape (B,)."""
        from flowfields.ppd.kernels import log_i0

        self.manifold.check_point(x)
        w, mu, ka = (a.to(x.dtype) for a in (self.weights, self.mus, self.kappas))
        d = mu.shape[1]
        cos = torch.cos(x[:, None, :] - mu[None]).sum(-1)  # (B, K)
        log_c = -d * (math.log(2 * math.pi) + log_i0(ka))
        return torch.logsumexp(ka * cos + log_c + torch.log(w), -1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples (n, d) in [-pi, pi), in the dtype of ``mus``."""
        from flowfields.ppd.kernels import sample_von_mises

        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        mu = self.mus[idx]
        return sample_von_mises(mu, self.kappas[idx][:, None].expand_as(mu), generator)


def random_von_mises_mixture(
    d: int, k: int, kappa: float, generator: torch.Generator | None = None
) -> VonMisesMixture:
    """``k`` equal components with uniform random means on T^d and concentration ``kappa``."""
    from flowfields.manifolds import FlatTorus

    mus = FlatTorus(d).random_base(k, generator, dtype=torch.float64)
    return VonMisesMixture(
        torch.full((k,), 1.0 / k, dtype=torch.float64),
        mus,
        torch.full((k,), float(kappa), dtype=torch.float64),
    )
