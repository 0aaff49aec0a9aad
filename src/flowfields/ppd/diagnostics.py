"""Measurements around PPD: the minibatch bias of the target's log-sum-exp, and the bound
``TV(p_1, q_1) <= PPD_1 / 2`` (Ben-Hamu et al., arXiv:2207.04711).

The bound: with ``q_t`` the density a field ``v`` transports from ``q_0 = p_0`` (uniform) and
``e_t = p_t - q_t``, the continuity equations give ``d_t e + div(e v) = p_t r_t`` with ``r_t``
the LMC residual, so ``d/dt int |e_t| <= int p_t |r_t|`` and ``int |e_1| <= PPD_1`` (with
``w_t = p_t``); TV is half the L1 distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.integrate import ODEOptions, gauss_legendre
from flowfields.ppd.paths import KernelPath
from flowfields.ppd.residual import lmc_residual

__all__ = [
    "BiasRow",
    "TVBound",
    "mean_offset",
    "minibatch_bias",
    "minibatch_gradient_bias",
    "tv_bound",
]


@dataclass
class BiasRow:
    """Mean and standard error of ``log p_hat_t(x) - log p_t(x)`` for one minibatch size."""

    batch: int
    bias: float
    stderr: float


def minibatch_bias(
    path: KernelPath,
    x_data: Tensor,
    batch_sizes: Sequence[int],
    *,
    t: float = 1.0,
    n_points: int = 256,
    n_draws: int = 64,
    generator: torch.Generator | None = None,
) -> list[BiasRow]:
    """The bias of the minibatch log-sum-exp estimate of ``log p_t`` at points of ``p_t``.

    For each batch size b, ``n_draws`` random subsets of b data points give
    ``log p_hat = logsumexp_i log k_t(x, y_i) - log b``; its mean minus the full-data
    ``log p_t(x)``, averaged over ``n_points`` points ``x ~ p_t``, is the bias (negative by
    Jensen's inequality: E log p_hat <= log E p_hat = log p_t).
    """
    n = x_data.shape[0]
    tt = torch.full((n_points,), float(t), dtype=x_data.dtype)
    x = path.sample(tt, x_data, generator)
    with torch.no_grad():
        full = path.log_prob(tt, x, x_data)
        rows = []
        for b in batch_sizes:
            check(isinstance(b, int) and 1 <= b <= n, "batch_sizes", b, f"integers in [1, {n}]")
            diffs = []
            for _ in range(n_draws):
                idx = torch.randperm(n, generator=generator)[:b]
                diffs.append(path.log_prob(tt, x, x_data[idx]) - full)
            per_draw = torch.stack(diffs).mean(1)  # average over points, one value per draw
            se = float(per_draw.std() / math.sqrt(n_draws)) if n_draws > 1 else float("nan")
            rows.append(BiasRow(b, float(per_draw.mean()), se))
    return rows


def minibatch_gradient_bias(
    field: torch.nn.Module,
    path: KernelPath,
    x_data: Tensor,
    batch_sizes: Sequence[int],
    *,
    n_points: int = 128,
    n_draws: int = 16,
    generator: torch.Generator | None = None,
) -> list[BiasRow]:
    """The bias of the PPD_2 gradient when the target's centers are a minibatch.

    Points ``x ~ p_t`` and times are drawn once (from the full data's path); for each batch
    size b, ``n_draws`` random subsets give parameter gradients ``g_b`` of the mean squared
    LMC residual, and the row reports the relative bias ``|E g_b - g_full| / |g_full|``
    estimated without the Monte-Carlo noise of the mean (:func:`mean_offset`) and, as
    ``stderr``, that noise level ``sqrt(trace Cov / n_draws) / |g_full|`` (at b = N the
    subsets are the data: 0).
    """
    n = x_data.shape[0]
    params = [p for p in field.parameters() if p.requires_grad]
    t = torch.rand(n_points, generator=generator, dtype=torch.float64).to(x_data.dtype)
    x = path.sample(t, x_data, generator)

    def grad(centers: Tensor) -> Tensor:
        r = lmc_residual(field, path, t, x, centers).residual
        gs = torch.autograd.grad(r.pow(2).mean(), params)
        return torch.cat([g.reshape(-1) for g in gs])

    full = grad(x_data)
    scale = float(full.norm())
    rows = []
    for b in batch_sizes:
        check(isinstance(b, int) and 1 <= b <= n, "batch_sizes", b, f"integers in [1, {n}]")
        draws = torch.stack(
            [grad(x_data[torch.randperm(n, generator=generator)[:b]]) for _ in range(n_draws)]
        )
        bias, se = mean_offset(draws, full)
        rows.append(BiasRow(b, bias / scale, se / scale))
    return rows


def mean_offset(draws: Tensor, reference: Tensor) -> tuple[float, float]:
    """``|E X - reference|`` from ``n`` draws ``X`` (n, P), without the noise of the mean.

    ``|mean - reference|^2`` overestimates ``|E X - reference|^2`` by ``trace Cov / n`` on
    average; subtracting the unbiased estimate of that term gives an unbiased estimate of
    the squared offset, whose square root (clamped at 0) is returned together with the
    noise level ``sqrt(trace Cov / n)`` (NaN for one draw).
    """
    n = draws.shape[0]
    raw = float((draws.mean(0) - reference).pow(2).sum())
    if n < 2:
        return math.sqrt(raw), math.nan
    noise = float(draws.var(0).sum()) / n
    return math.sqrt(max(raw - noise, 0.0)), math.sqrt(noise)


@dataclass
class TVBound:
    """``tv = TV(p_1, q_1)`` (quadrature) and ``ppd_1 = int_0^1 int p_t |r_t|`` (quadrature)."""

    tv: float
    ppd_1: float


def tv_bound(
    field: Callable[[Tensor, Tensor], Tensor],
    path: KernelPath,
    centers: Tensor,
    points: Tensor,
    weights: Tensor,
    *,
    n_t: int = 32,
    steps: int = 64,
) -> TVBound:
    """Both sides of ``TV(p_1, q_1) <= PPD_1 / 2`` by quadrature (float64).

    Args:
        field: the tangent field ``v(t, x)`` (a CNF from the uniform density).
        path: the target path, over ``centers``.
        points, weights: a quadrature rule on the manifold (e.g.
            :func:`~flowfields.manifolds.sphere2_quadrature`).
        n_t: Gauss–Legendre nodes in t; steps: rk4 steps of the CNF's log-likelihood.
    """
    from flowfields.matching import CNF

    m = path.manifold
    rule = gauss_legendre(n_t, 0.0, 1.0, dtype=points.dtype)
    ppd_1 = 0.0
    for t_k, w_k in zip(rule.nodes.tolist(), rule.weights.tolist()):
        tt = torch.full((points.shape[0],), t_k, dtype=points.dtype)
        r = lmc_residual(field, path, tt, points, centers).residual.detach()
        with torch.no_grad():
            p = path.log_prob(tt, points, centers).exp()
        ppd_1 += w_k * float((weights * p * r.abs()).sum())
    cnf = CNF(field, m.ambient_dim, manifold=m, solver=ODEOptions("rk4", step_size=1 / steps))
    with torch.no_grad():
        q1 = cnf.log_prob(points).exp()
        p1 = path.log_prob(torch.ones(points.shape[0], dtype=points.dtype), points, centers).exp()
    tv = 0.5 * float((weights * (p1 - q1).abs()).sum())
    return TVBound(tv=tv, ppd_1=ppd_1)
