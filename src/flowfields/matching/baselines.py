"""Simple density baselines for dequantized discrete data, evaluated in the same bits/dim.

Both are :class:`~flowfields.density.DensityModel` s (``sample(n)`` and ``log_prob(x)`` with
the same meaning as :class:`CNF`), so :func:`bits_per_dim` treats them exactly like a flow.
Their state (frequencies, mean and Cholesky factor) lives in float64 buffers; ``.to(dtype)``
changes it, and samples come out in the buffers' dtype and device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowfields.data.images import check_levels
from flowfields.density import check_points, check_sample_count
from flowfields.errors import check, check_finite, check_shape

__all__ = ["FullCovarianceGaussian", "IndependentPixelHistogram"]


class IndependentPixelHistogram(nn.Module):
    """Independent per-pixel categorical model, as a piecewise-constant density on [0, 1)^D.

    ``P(x) = prod_d P_d(x_d)`` with add-``alpha`` smoothed frequencies. On dequantized data
    ``y = (x + u) / L`` its density is ``p(y) = prod_d L P_d(floor(L y_d))``, constant on each
    cell, so its dequantized bits/dim equal the discrete model's exactly for every K.

    Args:
        event_shape: shape of one example, e.g. ``(1, 8, 8)``.
        levels: number of discrete levels L.
        alpha: add-alpha (Laplace) smoothing of the counts.
    """

    log_probs: Tensor

    def __init__(self, event_shape: tuple[int, ...], levels: int, alpha: float = 1.0) -> None:
        super().__init__()
        check(alpha > 0, "alpha", alpha, "a positive smoothing count")
        self.event_shape = tuple(int(s) for s in event_shape)
        self.levels = int(levels)
        self.alpha = float(alpha)
        D = math.prod(self.event_shape)
        self.register_buffer(
            "log_probs", torch.full((D, self.levels), -math.log(self.levels), dtype=torch.float64)
        )

    def fit(self, x_int: Tensor) -> IndependentPixelHistogram:
        """Estimate the per-pixel frequencies from integer data of shape (N, *event_shape)."""
        check_levels(x_int, self.levels)
        check(
            tuple(x_int.shape[1:]) == self.event_shape, "x_int", x_int, f"(N, *{self.event_shape})"
        )
        flat = x_int.reshape(x_int.shape[0], -1).long()
        counts = torch.zeros(flat.shape[1], self.levels, dtype=torch.float64)
        counts.scatter_add_(1, flat.T.cpu(), torch.ones(flat.T.shape, dtype=torch.float64))
        probs = (counts + self.alpha) / (counts.sum(1, keepdim=True) + self.alpha * self.levels)
        self.log_probs = probs.log().to(self.log_probs.device, self.log_probs.dtype)
        return self

    def log_prob(self, y: Tensor) -> Tensor:
        """Log-density of dequantized points ``y`` in [0, 1)^D, shape (B, *event_shape) -> (B,).

        Points outside [0, 1)^D have density zero (log-density ``-inf``).
        """
        check_points(y, self.event_shape, "y")
        flat = y.reshape(y.shape[0], -1)
        inside = ((flat >= 0) & (flat < 1)).all(dim=1)
        idx = (flat * self.levels).floor().long().clamp(0, self.levels - 1)
        lp = self.log_probs.unsqueeze(0).expand(flat.shape[0], -1, -1)
        per = lp.gather(2, idx.unsqueeze(-1)).squeeze(-1) + math.log(self.levels)
        out = per.sum(dim=1).to(y.dtype)
        return torch.where(inside, out, torch.full_like(out, -math.inf))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` dequantized samples in [0, 1)^D, shape (n, *event_shape), in the
        buffers' dtype."""
        check_sample_count(n)
        probs = self.log_probs.double().exp().cpu()
        k = torch.multinomial(probs, n, replacement=True, generator=generator).T  # (n, D)
        u = torch.rand(k.shape, generator=generator, dtype=torch.float64)
        y = (k + u) / self.levels
        return y.reshape(n, *self.event_shape).to(self.log_probs.device, self.log_probs.dtype)


class FullCovarianceGaussian(nn.Module):
    """Multivariate normal with full covariance, fitted by maximum likelihood (plus a ridge).

    Args:
        event_shape: shape of one example, e.g. ``(1, 8, 8)``.
        ridge: added to the covariance diagonal for numerical safety (dequantized pixels that
            are always 0 have a tiny variance ``1/(12 L^2)`` in [0, 1) units).
    """

    mean: Tensor
    scale_tril: Tensor

    def __init__(self, event_shape: tuple[int, ...], ridge: float = 1e-6) -> None:
        super().__init__()
        check(ridge >= 0, "ridge", ridge, "a non-negative number")
        self.event_shape = tuple(int(s) for s in event_shape)
        self.ridge = float(ridge)
        D = math.prod(self.event_shape)
        self.register_buffer("mean", torch.zeros(D, dtype=torch.float64))
        self.register_buffer("scale_tril", torch.eye(D, dtype=torch.float64))

    def fit(self, x: Tensor) -> FullCovarianceGaussian:
        """Fit mean and covariance to continuous data of shape (N, *event_shape)."""
        check_shape(x, "x")
        check(tuple(x.shape[1:]) == self.event_shape, "x", x, f"(N, *{self.event_shape})")
        check(x.shape[0] >= 2, "x", x, "at least 2 examples")
        check_finite(x, "x")
        like = self.mean
        flat = x.reshape(x.shape[0], -1).double()
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / flat.shape[0]
        cov = cov + self.ridge * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        self.mean = mean.to(like.device, like.dtype)
        self.scale_tril = torch.linalg.cholesky(cov).to(like.device, like.dtype)
        return self

    def _dist(self) -> torch.distributions.MultivariateNormal:
        return torch.distributions.MultivariateNormal(self.mean, scale_tril=self.scale_tril)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density, shape (B, *event_shape) -> (B,)."""
        check_points(x, self.event_shape)
        flat = x.reshape(x.shape[0], -1).to(self.mean.dtype)
        return self._dist().log_prob(flat).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples, shape (n, *event_shape), in the buffers' dtype and device."""
        check_sample_count(n)
        eps = torch.randn((n, self.mean.numel()), generator=generator, dtype=torch.float64)
        x = self.mean + eps.to(self.mean.device, self.mean.dtype) @ self.scale_tril.T
        return x.reshape(n, *self.event_shape)
