"""Quadrature on manifolds: integrate a function of points against the Riemannian volume.

- :func:`sphere2_quadrature`: Gauss–Legendre in ``z = cos(theta)`` times the uniform
  (trapezoid = spectral for periodic integrands) rule in the azimuth ``phi`` on S^2;
  exact for spherical harmonics of degree < min(2 n_z, n_phi).
- :func:`circle_quadrature`: the uniform (midpoint = trapezoid) rule on S^1 in R^2,
  spectrally accurate for smooth integrands (exact for trigonometric degree < n);
- :func:`torus_quadrature`: the midpoint rule on a uniform grid of T^d (spectrally accurate
  for smooth periodic integrands).

Each returns ``(points, weights)`` with ``sum(weights * f(points)) ~ int_M f dvol``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from flowfields.errors import check

__all__ = ["circle_quadrature", "sphere2_quadrature", "torus_quadrature"]


def sphere2_quadrature(
    n_z: int = 64, n_phi: int = 128, *, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """Points (n_z n_phi, 3) on S^2 and weights (n_z n_phi,) summing to 4 pi."""
    check(isinstance(n_z, int) and n_z >= 1, "n_z", n_z, "an integer >= 1")
    check(isinstance(n_phi, int) and n_phi >= 1, "n_phi", n_phi, "an integer >= 1")
    z_np, w_np = np.polynomial.legendre.leggauss(n_z)
    z = torch.as_tensor(z_np, dtype=dtype)
    wz = torch.as_tensor(w_np, dtype=dtype)
    phi = 2 * math.pi * (torch.arange(n_phi, dtype=dtype) + 0.5) / n_phi
    zz, pp = torch.meshgrid(z, phi, indexing="ij")
    rho = (1 - zz * zz).clamp_min(0).sqrt()
    pts = torch.stack([rho * torch.cos(pp), rho * torch.sin(pp), zz], -1).reshape(-1, 3)
    w = (wz[:, None] * (2 * math.pi / n_phi)).expand(n_z, n_phi).reshape(-1)
    return pts, w


def circle_quadrature(n: int = 256, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Points (n, 2) on S^1 (unit vectors at the midpoint angles) and weights summing to 2 pi."""
    check(isinstance(n, int) and n >= 1, "n", n, "an integer >= 1")
    phi = 2 * math.pi * (torch.arange(n, dtype=dtype) + 0.5) / n
    pts = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
    return pts, torch.full((n,), 2 * math.pi / n, dtype=dtype)


def torus_quadrature(
    d: int, n: int = 64, *, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """Midpoints (n^d, d) of a uniform grid of [-pi, pi)^d and weights summing to (2 pi)^d."""
    check(isinstance(d, int) and 1 <= d <= 3, "d", d, "1, 2 or 3 (grids grow as n^d)")
    check(isinstance(n, int) and n >= 1, "n", n, "an integer >= 1")
    g = -math.pi + 2 * math.pi * (torch.arange(n, dtype=dtype) + 0.5) / n
    pts = torch.stack(torch.meshgrid(*([g] * d), indexing="ij"), -1).reshape(-1, d)
    w = torch.full((pts.shape[0],), (2 * math.pi / n) ** d, dtype=dtype)
    return pts, w
