"""Gaussian Newtonian potentials: subharmonic functions whose Laplacian is a Gaussian density.

Used for the positivity construction of "Neural Conservation Laws: A Divergence-Free
Perspective" (arXiv:2210.01741): if the time component of the space-time potential is
``b_0(t, x) = sum_k w_k Φ_{σ_k}(x - μ_k)`` with ``ΔΦ_σ = N(0, σ² I)`` and ``w_k >= 0``, then
``ρ = Δ_x b_0 = sum_k w_k N(x; μ_k, σ_k² I) >= 0``.

``Φ_σ`` is radial; its gradient has the closed form (Gauss's law: the flux of ``∇Φ`` through the
sphere of radius r equals the Gaussian mass inside it)

    ∇Φ_σ(y) = y · P(d/2, |y|² / (2σ²)) / (|S^{d-1}| |y|^d),

with ``P`` the regularised lower incomplete gamma function and ``|S^{d-1}| = 2 π^{d/2} / Γ(d/2)``.
In 1-D it is ``CDF(y) - 1/2``; in 2-D ``y (1 - exp(-|y|²/2σ²)) / (2π|y|²)``. Only ``∇Φ`` (never
``Φ``) is needed by the density/flux models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowfields.errors import check

__all__ = ["gaussian_log_density", "gaussian_newtonian_grad", "regularized_lower_gamma_ratio"]

_SERIES_TERMS = 40


def regularized_lower_gamma_ratio(d: int, s: Tensor) -> Tensor:
    """``P(d/2, s) / s^(d/2)`` for ``s >= 0``: smooth at 0, differentiable everywhere.

    Uses the series ``P(a, s) = s^a e^{-s} sum_n s^n / Γ(a + n + 1)`` for ``s < a + 1`` and the
    recursion ``P(a + 1, s) = P(a, s) - s^a e^{-s} / Γ(a + 1)`` from ``P(1/2, s) = erf(√s)``
    or ``P(1, s) = 1 - e^{-s}`` otherwise (no cancellation in either branch).

    Args:
        d: the dimension (a = d / 2).
        s: (...,) non-negative tensor.

    Returns:
        (...,) tensor ``P(d/2, s) / s^(d/2)``.
    """
    check(isinstance(d, int) and d >= 1, "d", d, "an integer >= 1")
    a = d / 2
    use_series = s < a + 1
    s_series = torch.where(use_series, s, torch.zeros_like(s))
    # series: e^{-s} sum_n s^n / Γ(a + n + 1)
    n = torch.arange(_SERIES_TERMS, dtype=s.dtype, device=s.device)
    log_coef = -torch.lgamma(a + n + 1)
    terms = torch.exp(log_coef) * s_series.unsqueeze(-1) ** n
    series = torch.exp(-s_series) * terms.sum(-1)
    # recursion from a0 = 1/2 (d odd) or 1 (d even), valid where s >= a + 1 > 0
    s_rec = torch.where(use_series, torch.full_like(s, a + 1.0), s)
    if d % 2 == 1:
        p = torch.erf(torch.sqrt(s_rec))
        a0 = 0.5
    else:
        p = -torch.expm1(-s_rec)
        a0 = 1.0
    while a0 < a:
        p = p - torch.exp(a0 * torch.log(s_rec) - s_rec - math.lgamma(a0 + 1))
        a0 += 1.0
    rec = p / s_rec**a
    return torch.where(use_series, series, rec)


def gaussian_newtonian_grad(y: Tensor, sigma: Tensor | float) -> Tensor:
    """Gradient of the Gaussian Newtonian potential: ``∇Φ_σ(y)`` with ``ΔΦ_σ = N(0, σ² I)``.

    Args:
        y: (..., d) points (already centred: ``x - μ``).
        sigma: (...,) or scalar positive scale.

    Returns:
        (..., d) gradient; its divergence is the Gaussian density ``N(y; 0, σ² I)``.
    """
    d = y.shape[-1]
    sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
    r2 = (y * y).sum(-1)
    s = r2 / (2 * sigma**2)
    # y P(a, s) / (S r^d) = y (P(a, s) / s^a) (2σ²)^{-a} / S
    log_area = math.log(2.0) + (d / 2) * math.log(math.pi) - math.lgamma(d / 2)
    scale = torch.exp(-(d / 2) * torch.log(2 * sigma**2) - log_area)
    return y * (regularized_lower_gamma_ratio(d, s) * scale).unsqueeze(-1)


def gaussian_log_density(y: Tensor, sigma: Tensor | float) -> Tensor:
    """``log N(y; 0, σ² I)`` for (..., d) points and (...,) or scalar ``σ``."""
    d = y.shape[-1]
    sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
    return (
        -0.5 * (y * y).sum(-1) / sigma**2 - d * torch.log(sigma) - 0.5 * d * math.log(2 * math.pi)
    )
