"""Closed-form quadratic optimal transport from ``N(m, C)`` to ``N(0, I)``, and the
Knothe–Rosenblatt (triangular, autoregressive) Gaussian flow it is compared with.

For ``x ~ N(m, C)`` the Brenier map to ``N(0, I)`` is ``T(x) = C^{-1/2}(x - m)`` (the gradient of
the convex quadratic ``½ (x - m)^T C^{-1/2} (x - m)``) and
``W_2^2 = |m|^2 + tr(C + I - 2 C^{1/2})``. An autoregressive Gaussian flow ``z = L^{-1}(x - m)``
with ``C = L L^T`` (Cholesky) reaches the same density exactly, but its transport cost
``E|x - z|^2 = |m|^2 + tr(C) + d - 2 tr(L^{-1} C)`` is larger unless ``C`` is diagonal:
the comparison of Huang et al., arXiv:2012.05942, section 5.1 / figure 4.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfields.errors import check

__all__ = ["TriangularGaussianFlow", "gaussian_brenier_map", "gaussian_w2", "sqrtm_spd"]


def sqrtm_spd(C: Tensor, power: float = 0.5) -> Tensor:
    """``C^power`` of a symmetric positive-definite matrix by its eigen-decomposition."""
    check(
        isinstance(C, Tensor) and C.ndim == 2 and C.shape[0] == C.shape[1],
        "C",
        C,
        "a square matrix",
    )
    lam, U = torch.linalg.eigh(C)
    check(bool((lam > 0).all()), "C", C, "a positive-definite matrix")
    return (U * lam**power) @ U.T


def gaussian_w2(m: Tensor, C: Tensor) -> float:
    """``W_2^2(N(m, C), N(0, I)) = |m|^2 + tr(C + I - 2 C^{1/2})``."""
    d = C.shape[0]
    return float(m @ m + torch.trace(C) + d - 2 * torch.trace(sqrtm_spd(C)))


def gaussian_brenier_map(x: Tensor, m: Tensor, C: Tensor) -> Tensor:
    """The Brenier map ``C^{-1/2}(x - m)`` of ``N(m, C)`` onto ``N(0, I)``, (B, d) -> (B, d)."""
    return (x - m) @ sqrtm_spd(C, -0.5).to(x.dtype)


class TriangularGaussianFlow(nn.Module):
    """The maximum-likelihood autoregressive (lower-triangular affine) Gaussian flow
    ``z = L^{-1}(x - μ)`` fitted in closed form: ``μ`` the sample mean, ``L`` the Cholesky
    factor of the sample covariance. Its KL to the data's Gaussian vanishes as the sample
    grows; its transport cost does not reach W2 (a baseline for the OT claim).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("L", torch.eye(dim))

    def fit(self, x: Tensor) -> TriangularGaussianFlow:
        """Set ``μ`` and ``L`` from data ``x`` (B, d)."""
        self.mu = x.mean(0)
        xc = x - self.mu
        self.L = torch.linalg.cholesky(xc.T @ xc / x.shape[0])
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``z = L^{-1}(x - μ)``, (B, d) -> (B, d)."""
        return torch.linalg.solve_triangular(self.L, (x - self.mu).T, upper=False).T
