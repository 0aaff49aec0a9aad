"""Quantised entropy models: the probability tables the coder codes with, and their bits.

Two families (Chen et al., arXiv:2212.13659, §3: stored latents coded under the OU prior,
time stamps under a continuous-time prior):

- **latents**: an integer symbol ``k in {-R, ..., R}`` under a Gaussian ``N(m, s^2)``
  integrated over its bin ``[k - 1/2, k + 1/2]``;
- **gaps** between stored frames: ``n in {1, ..., n_max}`` frames under a mixture of an atom at
  ``n = 1`` (adjacent frames, weight ``pi``) and a geometric law from a Poisson clock of rate
  ``rho`` per unit time (``P(n) = e^{-rho dt (n-1)} (1 - e^{-rho dt})``, the tail mass on
  ``n_max``). Its cost grows like ``log2(1 / (rho dt))``: logarithmically in the frame rate.

**Floor.** Every table is ``p = (1 - K eps) q / Z + eps`` with ``K`` symbols, ``Z`` the total
mass of ``q`` and ``eps =`` :data:`FLOOR` ``= 2^-16``, so every symbol stays codable. The
coder (``constriction``'s categorical model, 24-bit fixed point) then rounds ``p`` to
multiples of ``2^-24``: with ``p >= 2^-16`` that changes any symbol's cost by at most
``log2(1 + 2^-7)`` bits, which is why the bits here (training-time rate, codec estimate) and
the bytes written agree to a few bits per sequence (``tests/compression``). The training-time
bits (:func:`gaussian_bits`, :func:`gap_bits`) are the table entries computed at any real
argument: at integer symbols they *are* the coder's tables.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "FLOOR",
    "gap_bits",
    "gap_table",
    "gaussian_bits",
    "gaussian_table",
]

#: The probability floor ``eps`` of every table (see the module docstring).
FLOOR = 2.0**-16

_LOG2E = 1.0 / math.log(2.0)


def _floored(q: Tensor, total: Tensor, n_symbols: int | Tensor) -> Tensor:
    return (1.0 - n_symbols * FLOOR) * q / total + FLOOR


def _gauss_mass(lo: Tensor, hi: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return torch.special.ndtr((hi - mean) / std) - torch.special.ndtr((lo - mean) / std)


def gaussian_bits(z: Tensor, mean: Tensor, std: Tensor, radius: int) -> Tensor:
    """Bits ``-log2 p(z)`` of latent values under the floored binned Gaussian (elementwise).

    ``z`` may be real (training: ``round(u) + noise`` replaced by ``u + U(-1/2, 1/2)``); at an
    integer ``z`` it equals ``-log2`` of the entry of :func:`gaussian_table`. Shapes broadcast.
    """
    q = _gauss_mass(z - 0.5, z + 0.5, mean, std)
    total = _gauss_mass(
        torch.full_like(z, -radius - 0.5), torch.full_like(z, radius + 0.5), mean, std
    )
    return -torch.log2(_floored(q, total, 2 * radius + 1))


def gaussian_table(mean: Tensor, std: Tensor, radius: int) -> Tensor:
    """Floored probabilities of the symbols ``-radius .. radius``: shape ``(*mean.shape, 2R+1)``."""
    k = torch.arange(-radius, radius + 1, dtype=mean.dtype, device=mean.device)
    z = k.expand(*mean.shape, k.numel())
    return torch.exp2(-gaussian_bits(z, mean[..., None], std[..., None], radius))


def _gap_q(n: Tensor, n_max: Tensor, rho_dt: Tensor, pi: Tensor) -> Tensor:
    """Unfloored mixture probability of a gap of ``n`` frames (``1 <= n <= n_max``)."""
    survive = torch.exp(-rho_dt * (n - 1))
    geometric = torch.where(n < n_max, survive * -torch.expm1(-rho_dt), survive)
    atom = (n == 1).to(rho_dt.dtype)
    return pi * atom + (1 - pi) * geometric


def gap_bits(n: Tensor, n_max: Tensor, rho: Tensor, dt: Tensor, pi: Tensor) -> Tensor:
    """Bits of gaps ``n`` (frames, ``1 <= n <= n_max``) under the floored gap law.

    Args:
        n, n_max: gaps and the largest possible gap (frames left), same shape (floats).
        rho: the clock's rate per unit time; dt: frame spacing; pi: weight of the ``n = 1`` atom.
    """
    q = _gap_q(n, n_max, rho * dt, pi)
    bits = -torch.log2(_floored(q, torch.ones_like(q), n_max))
    return torch.where(n_max > 1, bits, torch.zeros_like(bits))  # one possible gap: 0 bits


def gap_table(n_max: int, rho: Tensor, dt: Tensor | float, pi: Tensor) -> Tensor:
    """Floored probabilities of the gaps ``1 .. n_max`` (shape ``(n_max,)``)."""
    n = torch.arange(1, n_max + 1, dtype=rho.dtype, device=rho.device)
    q = _gap_q(n, torch.full_like(n, float(n_max)), rho * dt, pi)
    return _floored(q, torch.ones_like(q), n_max)
