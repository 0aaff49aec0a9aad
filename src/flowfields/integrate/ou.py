"""Closed forms of the Ornstein–Uhlenbeck process ``dz = theta (mu - z) dt + sigma dW``.

With ``y = z - mu`` and ``v(s) = sigma^2 / (2 theta) (1 - exp(-2 theta s))``:

- transition: ``z(t + s) | z(t)  ~  N(mu + exp(-theta s) y(t), v(s))``;
- stationary law: ``N(mu, sigma^2 / (2 theta))``;
- bridge, for ``t_a <= t <= t_b`` given ``z(t_a)``, ``z(t_b)`` (``s = t - t_a``, ``r = t_b - t``):
  ``mean = mu + (exp(-theta s) v(r) y_a + exp(-theta r) v(s) y_b) / v(s + r)``,
  ``var = v(s) v(r) / v(s + r)`` (the product of the two Gaussian factors
  ``N(y_t; e^{-theta s} y_a, v(s)) N(y_b; e^{-theta r} y_t, v(r))``, using
  ``v(r) + e^{-2 theta r} v(s) = v(s + r)``).

All functions broadcast over their arguments (tensors or floats) and keep the dtype of ``z``;
``v`` is computed with ``expm1`` so short gaps keep their relative accuracy. :class:`OUSDE` is
the same process as an SDE object for :func:`flowfields.integrate.sdeint` (diagonal noise).
Used by :mod:`flowfields.compression` (Chen et al., arXiv:2212.13659: OU prior of the stored
latent points and the bridge decoder between them).

Example:
    >>> import torch
    >>> mean, var = ou_bridge(torch.tensor(1.0), 0.0, torch.tensor(1.0), 2.0, 1.0, 1e-9, 0.0, 1.0)
    >>> round(float(mean), 6), round(float(var), 6)  # theta -> 0: the Brownian bridge
    (1.0, 0.5)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowfields.errors import check

__all__ = ["OUSDE", "ou_bridge", "ou_stationary", "ou_transition", "ou_variance"]

Scalar = Tensor | float


def _t(x: Scalar, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x if like is None else x.to(dtype=like.dtype, device=like.device)
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=dtype, device=device)


def _check_params(theta: Scalar, sigma: Scalar) -> None:
    th, sg = torch.as_tensor(theta), torch.as_tensor(sigma)
    check(bool((th > 0).all()), "theta", theta, "mean-reversion rates > 0")
    check(bool((sg > 0).all()), "sigma", sigma, "diffusion scales > 0")


def ou_variance(s: Scalar, theta: Scalar, sigma: Scalar) -> Tensor:
    """``v(s) = sigma^2 (1 - exp(-2 theta s)) / (2 theta)``: the variance after a gap ``s >= 0``."""
    s, theta, sigma = _t(s), _t(theta), _t(sigma)
    return sigma**2 * -torch.expm1(-2.0 * theta * s) / (2.0 * theta)


def ou_stationary(mu: Scalar, theta: Scalar, sigma: Scalar) -> tuple[Tensor, Tensor]:
    """Mean and variance of the stationary law ``N(mu, sigma^2 / (2 theta))``."""
    _check_params(theta, sigma)
    mu_t, theta_t, sigma_t = _t(mu), _t(theta), _t(sigma)
    return mu_t + 0 * theta_t, sigma_t**2 / (2.0 * theta_t) + 0 * mu_t


def ou_transition(
    z: Tensor, s: Scalar, theta: Scalar, mu: Scalar, sigma: Scalar
) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``z(t + s) | z(t) = z`` (``s >= 0``; also ``z(t - s) | z(t)``, the
    stationary OU process being reversible).

    Args:
        z: the known value, any shape; s, theta, mu, sigma: broadcast against it.
    """
    check(isinstance(z, Tensor), "z", z, "a tensor")
    _check_params(theta, sigma)
    s_t = _t(s, z)
    check(bool((s_t >= 0).all()), "s", s, "gaps >= 0")
    theta_t, mu_t = _t(theta, z), _t(mu, z)
    mean = mu_t + torch.exp(-theta_t * s_t) * (z - mu_t)
    return mean, ou_variance(s_t, theta_t, _t(sigma, z)) + 0 * mean


def ou_bridge(
    z_a: Tensor,
    t_a: Scalar,
    z_b: Tensor,
    t_b: Scalar,
    t: Scalar,
    theta: Scalar,
    mu: Scalar,
    sigma: Scalar,
) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``z(t) | z(t_a) = z_a, z(t_b) = z_b`` for ``t_a <= t <= t_b``.

    Exact at the ends (``t = t_a`` gives ``(z_a, 0)``); needs ``t_b > t_a``. Shapes broadcast.
    """
    check(isinstance(z_a, Tensor), "z_a", z_a, "a tensor")
    _check_params(theta, sigma)
    t_a_t, t_b_t, t_t = _t(t_a, z_a), _t(t_b, z_a), _t(t, z_a)
    check(bool((t_b_t > t_a_t).all()), "t_b", t_b, "times after t_a")
    check(bool(((t_t >= t_a_t) & (t_t <= t_b_t)).all()), "t", t, "times within [t_a, t_b]")
    theta_t, mu_t, sigma_t = _t(theta, z_a), _t(mu, z_a), _t(sigma, z_a)
    s, r = t_t - t_a_t, t_b_t - t_t
    v_s, v_r = ou_variance(s, theta_t, sigma_t), ou_variance(r, theta_t, sigma_t)
    v_sr = ou_variance(s + r, theta_t, sigma_t)
    mean = (
        mu_t
        + (
            torch.exp(-theta_t * s) * v_r * (z_a - mu_t)
            + torch.exp(-theta_t * r) * v_s * (z_b - mu_t)
        )
        / v_sr
    )
    return mean, v_s * v_r / v_sr + 0 * mean


class OUSDE(nn.Module):
    """``dz = theta (mu - z) dt + sigma dW`` for :func:`flowfields.integrate.sdeint`.

    Args:
        theta, mu, sigma: per-dimension parameters, shape ``(d,)`` (or scalars), broadcast over
            the batch ``(B, d)``.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, theta: Scalar, mu: Scalar, sigma: Scalar) -> None:
        super().__init__()
        _check_params(theta, sigma)
        self.theta, self.mu, self.sigma = _t(theta), _t(mu), _t(sigma)

    def f(self, t: Any, z: Tensor) -> Tensor:
        """Drift ``theta (mu - z)``, shape ``(B, d)``."""
        return self.theta.to(z) * (self.mu.to(z) - z)

    def g(self, t: Any, z: Tensor) -> Tensor:
        """Diagonal diffusion ``sigma``, shape ``(B, d)``."""
        return self.sigma.to(z).expand_as(z)
