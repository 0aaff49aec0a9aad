"""Densities on the flat torus T^d with exact log-densities and samplers: mixtures of products
of von Mises (with an EM fit, the classical baseline on T^2) and of wrapped normals (the data
of ``ppd-torus``, as in Ben-Hamu et al., arXiv:2207.04711).

- von Mises on one angle: ``exp(kappa cos(x - mu)) / (2 pi I_0(kappa))``;
- wrapped normal: ``sum_{k in Z} N(x - mu + 2 pi k; 0, sigma^2)``, summed over
  ``|k| <= m`` with ``m`` chosen so that the first dropped term is below ``exp(-(2 pi m -
  pi)^2 / (2 sigma^2)) < 1e-20`` relative (exact to rounding);
- :func:`fit_von_mises_mixture`: EM with one concentration per component and angle; the
  M-step solves ``A(kappa) = I_1(kappa) / I_0(kappa) = R`` (Banerjee et al.'s start
  ``R (2 - R^2) / (1 - R^2)``, then Newton steps with ``A' = 1 - A / kappa - A^2``).

Each density is an ``nn.Module`` with buffers meeting the contract of :mod:`flowfields.density`.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn

from flowfields.density import check_sample_count
from flowfields.errors import check
from flowfields.manifolds import FlatTorus, wrap
from flowfields.ppd.kernels import log_i0, sample_von_mises

__all__ = [
    "VonMisesMixture",
    "WrappedNormalMixture",
    "fit_von_mises_mixture",
    "random_von_mises_mixture",
    "random_wrapped_normal_mixture",
]


def _per_angle(value: Tensor, k: int, d: int, name: str) -> Tensor:
    """``value`` of shape (K,) or (K, d) as (K, d)."""
    check(
        value.shape in ((k,), (k, d)) and bool((value >= 0).all()),
        name,
        value,
        f"shape ({k},) or ({k}, {d}), >= 0",
    )
    return (value[:, None] if value.ndim == 1 else value).expand(k, d).clone()


class _TorusMixture(nn.Module, abc.ABC):
    """Shared parts: weights (K,), means (K, d), one scale per component and angle (K, d)."""

    weights: Tensor
    mus: Tensor

    def __init__(self, weights: Tensor, mus: Tensor) -> None:
        super().__init__()
        k = weights.shape[0]
        check(weights.ndim == 1 and bool((weights > 0).all()), "weights", weights, "(K,) > 0")
        check(mus.ndim == 2 and mus.shape[0] == k, "mus", mus, f"angles of shape ({k}, d)")
        self.manifold = FlatTorus(mus.shape[1])
        self.event_shape = torch.Size([mus.shape[1]])
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("mus", mus.clone())

    @abc.abstractmethod
    def log_components(self, x: Tensor) -> Tensor:
        """``log w_k + log p_k(x_b)``, shape (B, K)."""

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the flat volume of T^d, shape (B,), in the dtype of ``x``."""
        self.manifold.check_point(x)
        return torch.logsumexp(self.log_components(x), -1)

    def _draw(self, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        check_sample_count(n)
        on = generator.device if generator is not None else "cpu"
        idx = torch.multinomial(self.weights.to(on), n, replacement=True, generator=generator)
        return idx, self.mus.to(on)[idx]


class VonMisesMixture(_TorusMixture):
    """``sum_k w_k prod_j VM(x_j; mu_kj, kappa_kj)`` on T^d (exact density and sampler).

    Args:
        weights: (K,) > 0; mus: (K, d) angles; kappas: (K,) or (K, d), >= 0.
    """

    kappas: Tensor

    def __init__(self, weights: Tensor, mus: Tensor, kappas: Tensor) -> None:
        super().__init__(weights, mus)
        k, d = mus.shape
        self.register_buffer("kappas", _per_angle(kappas, k, d, "kappas"))

    def log_components(self, x: Tensor) -> Tensor:
        w, mu, ka = (a.to(x) for a in (self.weights, self.mus, self.kappas))
        cos = torch.cos(x[:, None, :] - mu[None])  # (B, K, d)
        log_c = -(math.log(2 * math.pi) + log_i0(ka)).sum(-1)  # (K,)
        return (ka * cos).sum(-1) + log_c + torch.log(w)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples (n, d) in [-pi, pi), in the dtype and on the device of the buffers."""
        idx, mu = self._draw(n, generator)
        x = sample_von_mises(mu, self.kappas.to(mu.device)[idx], generator)
        return x.to(self.mus.device)


class WrappedNormalMixture(_TorusMixture):
    """``sum_k w_k prod_j WN(x_j; mu_kj, sigma_kj)`` on T^d (exact density and sampler).

    Args:
        weights: (K,) > 0; mus: (K, d) angles; sigmas: (K,) or (K, d), > 0.
    """

    sigmas: Tensor

    def __init__(self, weights: Tensor, mus: Tensor, sigmas: Tensor) -> None:
        super().__init__(weights, mus)
        k, d = mus.shape
        check(bool((sigmas > 0).all()), "sigmas", sigmas, "scales > 0")
        self.register_buffer("sigmas", _per_angle(sigmas, k, d, "sigmas"))

    def log_components(self, x: Tensor) -> Tensor:
        w, mu, sg = (a.to(x) for a in (self.weights, self.mus, self.sigmas))
        # the first dropped wrap, at |delta| >= 2 pi m - pi, is below e^-46 of the peak
        m = max(1, math.ceil((math.sqrt(92.0) * float(sg.max()) + math.pi) / (2 * math.pi)))
        shifts = 2 * math.pi * torch.arange(-m, m + 1, dtype=x.dtype, device=x.device)
        delta = wrap(x[:, None, :] - mu[None])[..., None] + shifts  # (B, K, d, 2m + 1)
        log_k = torch.logsumexp(-0.5 * (delta / sg[..., None]) ** 2, -1)
        log_c = -(torch.log(sg) + 0.5 * math.log(2 * math.pi))
        return (log_k + log_c).sum(-1) + torch.log(w)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples (n, d) in [-pi, pi), in the dtype and on the device of the buffers."""
        idx, mu = self._draw(n, generator)
        z = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return wrap(mu + self.sigmas.to(mu.device)[idx] * z).to(self.mus.device)


def random_von_mises_mixture(
    d: int, k: int, kappa: float, generator: torch.Generator | None = None
) -> VonMisesMixture:
    """``k`` equal components with uniform random means on T^d and concentration ``kappa``."""
    mus = FlatTorus(d).random_base(k, generator, dtype=torch.float64)
    return VonMisesMixture(
        torch.full((k,), 1.0 / k, dtype=torch.float64),
        mus,
        torch.full((k,), float(kappa), dtype=torch.float64),
    )


def random_wrapped_normal_mixture(
    d: int, k: int, sigma: float, generator: torch.Generator | None = None
) -> WrappedNormalMixture:
    """``k`` equal components with uniform random means on T^d and scale ``sigma``."""
    mus = FlatTorus(d).random_base(k, generator, dtype=torch.float64)
    return WrappedNormalMixture(
        torch.full((k,), 1.0 / k, dtype=torch.float64),
        mus,
        torch.full((k,), float(sigma), dtype=torch.float64),
    )


def _a_inverse(r: Tensor, newton: int = 8) -> Tensor:
    """``kappa`` with ``I_1(kappa) / I_0(kappa) = r`` for r in (0, 1) (float64)."""
    kappa = r * (2 - r * r) / (1 - r * r)
    for _ in range(newton):
        a = torch.special.i1e(kappa) / torch.special.i0e(kappa)
        slope = (1 - a / kappa - a * a).clamp_min(1e-12)
        kappa = (kappa - (a - r) / slope).clamp_min(1e-8)
    return kappa


def fit_von_mises_mixture(
    x: Tensor, k: int, *, iters: int = 100, generator: torch.Generator | None = None
) -> VonMisesMixture:
    """EM for a ``k``-component mixture of products of von Mises on T^d, one concentration
    per component and angle (means initialised at random data points; float64)."""
    d = x.shape[-1] if x.ndim == 2 else 1
    FlatTorus(d).check_point(x)
    check(isinstance(k, int) and 1 <= k <= x.shape[0], "k", k, "an integer in [1, len(x)]")
    x = x.to(torch.float64)
    n = x.shape[0]
    mus = x[torch.randperm(n, generator=generator)[:k]].clone()
    mix = VonMisesMixture(
        torch.full((k,), 1.0 / k, dtype=torch.float64), mus, torch.ones(k, dtype=torch.float64)
    )
    cos, sin = torch.cos(x), torch.sin(x)
    for _ in range(iters):
        resp = torch.softmax(mix.log_components(x), -1)  # (n, k)
        nk = resp.sum(0).clamp_min(1e-10)
        c, s = resp.T @ cos, resp.T @ sin  # (k, d)
        r = ((c * c + s * s).sqrt() / nk[:, None]).clamp(1e-8, 1 - 1e-8)
        mix.weights.copy_((nk / n).clamp_min(1e-12))
        mix.mus.copy_(torch.atan2(s, c))
        mix.kappas.copy_(_a_inverse(r).clamp(max=1e5))
    return mix
