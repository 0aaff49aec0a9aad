"""Kernels on manifolds with exact, differentiable log-densities, and their samplers.

- von Mises–Fisher on S^n: ``vMF(x; mu, kappa) = C_n(kappa) exp(kappa <mu, x>)`` with
  ``log C_n(kappa) = -log int_{S^n} exp(kappa <mu, x>) dx``: closed forms on S^1
  (``-log 2 pi I_0(kappa)``) and S^2 (``log(kappa / sinh kappa) - log 4 pi``), a 256-node
  Gauss–Legendre rule in the polar angle otherwise; ``kappa = 0`` is exactly uniform.
- von Mises on each angle of T^d: ``prod_k exp(kappa cos(x_k - mu_k)) / (2 pi I_0(kappa))``.

Samplers: Wood's closed form on S^2 and Wood's rejection algorithm on every S^n (Wood,
"Simulation of the von Mises Fisher distribution", Commun. Stat. Simul. Comput. 1994), and on
the circle (the angle itself) uniform proposals with acceptance
``exp(kappa (cos theta - 1))`` for ``kappa <= 1`` and Best & Fisher's wrapped-Cauchy envelope
above (Best & Fisher, Appl. Stat. 1979).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.manifolds.sphere import sphere_log_area

__all__ = [
    "log_i0",
    "log_vmf_normalizer",
    "sample_vmf",
    "sample_vmf_s2",
    "sample_von_mises",
]


def log_i0(kappa: Tensor) -> Tensor:
    """``log I_0(kappa)`` for kappa >= 0, differentiable (``log i0e(kappa) + kappa``)."""
    return torch.log(torch.special.i0e(kappa)) + kappa


def _log_kappa_over_sinh(kappa: Tensor) -> Tensor:
    """``log(kappa / sinh kappa)``, series ``-k^2/6 + k^4/180`` below 1e-3 (NaN-free grads)."""
    small = kappa < 1e-3
    k = torch.where(small, torch.ones_like(kappa), kappa)
    exact = torch.log(k) - k - torch.log1p(-torch.exp(-2 * k)) + math.log(2.0)
    k2 = kappa * kappa
    return torch.where(small, -k2 / 6 + k2 * k2 / 180, exact)


def log_vmf_normalizer(kappa: Tensor, n: int) -> Tensor:
    """``log C_n(kappa)`` of the vMF density on S^n w.r.t. the volume (``-log|S^n|`` at 0)."""
    if n == 1:
        return -math.log(2 * math.pi) - log_i0(kappa)
    if n == 2:
        return _log_kappa_over_sinh(kappa) - math.log(4 * math.pi)
    # int_{S^n} e^{k<mu,x>} = |S^{n-1}| int_0^pi e^{k cos th} sin^{n-1} th dth
    nodes, weights = np.polynomial.legendre.leggauss(256)
    th = torch.as_tensor((nodes + 1) * math.pi / 2, dtype=kappa.dtype, device=kappa.device)
    lw = torch.as_tensor(np.log(weights * math.pi / 2), dtype=kappa.dtype, device=kappa.device)
    terms = kappa[..., None] * torch.cos(th) + (n - 1) * torch.log(torch.sin(th)) + lw
    return -(sphere_log_area(n - 1) + torch.logsumexp(terms, -1))


def _tangent_frame(mu: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit vectors orthogonal to each row of ``mu`` (B, 3) and to each other."""
    a = torch.zeros_like(mu)
    idx = mu.abs().argmin(dim=-1, keepdim=True)
    a.scatter_(-1, idx, 1.0)
    e1 = a - (a * mu).sum(-1, keepdim=True) * mu
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    return e1, torch.cross(mu, e1, dim=-1)


def sample_vmf_s2(mu: Tensor, kappa: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One vMF sample on S^2 per row of ``mu`` (B, 3) with concentrations ``kappa`` (B,)."""
    check(mu.ndim == 2 and mu.shape[1] == 3, "mu", mu, "mean directions of shape (B, 3)")
    b = mu.shape[0]
    u, phi = torch.rand(2, b, generator=generator, dtype=mu.dtype, device=mu.device)
    small = kappa < 1e-8
    k = torch.where(small, torch.ones_like(kappa), kappa)
    w_exact = 1 + torch.log(u + (1 - u) * torch.exp(-2 * k)) / k
    w = torch.where(small, 2 * u - 1, w_exact).clamp(-1, 1)
    e1, e2 = _tangent_frame(mu)
    ang = 2 * math.pi * phi
    side = torch.cos(ang)[:, None] * e1 + torch.sin(ang)[:, None] * e2
    x = w[:, None] * mu + (1 - w * w).clamp_min(0).sqrt()[:, None] * side
    return x / x.norm(dim=-1, keepdim=True)


def sample_vmf(
    mu: Tensor, kappa: Tensor, generator: torch.Generator | None = None, max_rounds: int = 100
) -> Tensor:
    """One vMF sample on S^n per row of ``mu`` (B, n + 1), concentrations ``kappa`` (B,) >= 0.

    Wood's (1994) rejection algorithm for the height ``w = <mu, x>``, whose density on
    [-1, 1] is ``~ exp(kappa w) (1 - w^2)^((n - 2) / 2)``: with ``m = n`` (so ``p = n + 1``
    ambient), ``b = m / (2 kappa + sqrt(4 kappa^2 + m^2))`` (the cancellation-free form of
    ``(-2 kappa + sqrt(4 kappa^2 + m^2)) / m``), ``x0 = (1 - b) / (1 + b)``,
    ``c = kappa x0 + m log(1 - x0^2)``; propose ``Z ~ Beta(m / 2, m / 2)`` (drawn as
    ``|g_1|^2 / (|g_1|^2 + |g_2|^2)`` with ``g_1, g_2 ~ N(0, I_m)``, so the generator is
    honoured), ``w = (1 - (1 + b) Z) / (1 - (1 - b) Z)``, accept when
    ``kappa w + m log(1 - x0 w) - c >= log U``. Then ``x = w mu + sqrt(1 - w^2) v`` with
    ``v`` uniform on the unit sphere of the tangent space at ``mu``. ``kappa = 0`` gives the
    uniform density exactly (b = 1, every proposal accepted). Computed in float64, returned
    in the dtype of ``mu``.

    Raises:
        FlowfieldsError: ``mu`` not (B, n + 1) with n >= 1, ``kappa`` not (B,) finite and
            >= 0, or proposals not accepted within ``max_rounds`` rounds.
    """
    check(
        isinstance(mu, Tensor) and mu.ndim == 2 and mu.shape[1] >= 2,
        "mu",
        mu,
        "mean directions of shape (B, n + 1) with n >= 1",
    )
    b_n, p = mu.shape
    kappa = torch.as_tensor(kappa, device=mu.device)
    check(
        kappa.shape == (b_n,) and bool(torch.isfinite(kappa).all()) and bool((kappa >= 0).all()),
        "kappa",
        kappa,
        f"finite concentrations >= 0 of shape ({b_n},)",
    )
    dt, on = torch.float64, mu.device
    mu64 = mu.to(dt)
    k = kappa.to(dt)
    m = p - 1
    b = m / (2 * k + torch.sqrt(4 * k * k + m * m))
    x0 = (1 - b) / (1 + b)
    log_1mx0sq = torch.log(4 * b) - 2 * torch.log1p(b)  # log(1 - x0^2), stable
    c = k * x0 + m * log_1mx0sq
    w = torch.full((b_n,), float("nan"), dtype=dt, device=on)
    todo = torch.ones(b_n, dtype=torch.bool, device=on)
    for _ in range(max_rounds):
        if not bool(todo.any()):
            break
        g = torch.randn(2, b_n, m, generator=generator, dtype=dt, device=on).pow(2).sum(-1)
        z = g[0] / (g[0] + g[1])
        u = torch.rand(b_n, generator=generator, dtype=dt, device=on)
        w_prop = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        acc = (k * w_prop + m * torch.log1p(-x0 * w_prop) - c >= torch.log(u)) & todo
        w = torch.where(acc, w_prop, w)
        todo = todo & ~acc
    check(not bool(todo.any()), "kappa", kappa, f"concentrations accepted in {max_rounds} rounds")
    w = w.clamp(-1, 1)
    v = torch.randn(b_n, p, generator=generator, dtype=dt, device=on)
    v = v - (v * mu64).sum(-1, keepdim=True) * mu64
    v = v / v.norm(dim=-1, keepdim=True)
    x = w[:, None] * mu64 + (1 - w * w).clamp_min(0).sqrt()[:, None] * v
    return (x / x.norm(dim=-1, keepdim=True)).to(mu.dtype)


def sample_von_mises(
    mu: Tensor, kappa: Tensor, generator: torch.Generator | None = None, max_rounds: int = 100
) -> Tensor:
    """von Mises samples, one per entry of ``mu`` (any shape), ``kappa`` broadcastable to it.

    Exact rejection sampling for every ``kappa >= 0`` (see the module docstring); angles
    in [-pi, pi).
    """
    kap = torch.as_tensor(kappa, dtype=mu.dtype, device=mu.device).expand_as(mu).reshape(-1)
    out = torch.full_like(kap, float("nan"))
    todo = torch.ones_like(kap, dtype=torch.bool)
    k = kap.clamp_min(1e-12)
    tau = 1 + torch.sqrt(1 + 4 * k * k)
    rho = (tau - torch.sqrt(2 * tau)) / (2 * k)
    r = (1 + rho * rho) / (2 * rho)
    low = kap <= 1.0
    for _ in range(max_rounds):
        if not bool(todo.any()):
            break
        u1, u2, u3 = torch.rand(
            3, kap.numel(), generator=generator, dtype=mu.dtype, device=mu.device
        )
        # uniform proposals (kappa <= 1)
        th_u = math.pi * (2 * u1 - 1)
        acc_u = torch.log(u2) <= kap * (torch.cos(th_u) - 1)
        # Best & Fisher (kappa > 1)
        z = torch.cos(math.pi * u1)
        f = ((1 + r * z) / (r + z)).clamp(-1, 1)
        c = k * (r - f)
        acc_b = (c * (2 - c) - u2 > 0) | (torch.log(c / u2) + 1 - c >= 0)
        th_b = torch.sign(u3 - 0.5) * torch.arccos(f)
        th = torch.where(low, th_u, th_b)
        acc = torch.where(low, acc_u, acc_b) & todo
        out = torch.where(acc, th, out)
        todo = todo & ~acc
    check(not bool(todo.any()), "kappa", kappa, "concentrations the sampler accepts in 100 rounds")
    from flowfields.manifolds.torus import wrap

    return wrap(out.reshape(mu.shape) + mu)
