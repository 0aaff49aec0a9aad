"""Incompressible Navier–Stokes on the flat torus: the Taylor–Green vortex, its residual, and
the NCL / PINN fluid models of "Neural Conservation Laws: A Divergence-Free Perspective"
(Richter-Powell, Lipman, Chen, arXiv:2210.01741).

On ``[0, 2π)^2`` the Taylor–Green vortex

    u(t, x, y) = (sin x cos y, -cos x sin y) e^{-2νt},  p = (cos 2x + cos 2y) e^{-4νt} / 4

solves ``∂_t u + (u·∇)u + ∇p = ν Δu``, ``div u = 0``. :func:`momentum_residual` evaluates the
left-hand side minus the right with forward-mode derivatives (rows independent).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jvp, vmap

from flowfields.errors import check
from flowfields.nn.divfree import DivFreeMatrixField, PeriodicFeatures
from flowfields.nn.layers import mlp
from flowfields.nn.time import broadcast_time

__all__ = [
    "METHODS",
    "FluidModel",
    "PeriodicMLP",
    "momentum_residual",
    "taylor_green",
    "velocity_error",
]

#: The two velocity models compared.
METHODS = ("ncl", "pinn")


def taylor_green(t: Tensor, x: Tensor, nu: float) -> tuple[Tensor, Tensor]:
    """Exact Taylor–Green velocity (B, 2) and pressure (B,) at times t (B,) and points x (B, 2)."""
    f = torch.exp(-2 * nu * t)
    a, b = x[:, 0], x[:, 1]
    u = torch.stack([torch.sin(a) * torch.cos(b), -torch.cos(a) * torch.sin(b)], -1)
    p = 0.25 * (torch.cos(2 * a) + torch.cos(2 * b)) * f**2
    return u * f.unsqueeze(-1), p


class PeriodicMLP(nn.Module):
    """An MLP on ``[periodic features of x, t]`` for fields on the flat torus ``[0, 2π)^2``.

    Args:
        out_dim: output size.
        hidden, depth: hidden width and number of hidden layers (SiLU).
        n_frequencies: Fourier frequencies of :class:`~flowfields.nn.PeriodicFeatures`.

    Shapes: ``forward(t, x)``: t (B,) or scalar, x (B, 2) -> (B, out_dim).
    """

    def __init__(self, out_dim: int, hidden: int, depth: int, n_frequencies: int) -> None:
        super().__init__()
        self.features = PeriodicFeatures(2, n_frequencies)
        self.net = mlp(self.features.out_features + 1, out_dim, hidden, depth, "silu")

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        t_b = broadcast_time(t, x).unsqueeze(-1)
        return self.net(torch.cat([self.features(x), t_b], -1))


class FluidModel(nn.Module):
    """Velocity and pressure networks on the torus for the NCL or the PINN method.

    "Neural Conservation Laws: A Divergence-Free Perspective" (Richter-Powell, Lipman, Chen,
    arXiv:2210.01741), the fluid experiments: the NCL velocity is an exactly divergence-free
    :class:`~flowfields.nn.DivFreeMatrixField` (in 2-D a stream function), the PINN's a plain
    :class:`PeriodicMLP` that a penalty pushes towards ``div u = 0``.

    Args:
        method: ``"ncl"`` (divergence-free velocity) or ``"pinn"`` (plain velocity).
        hidden, depth, n_frequencies: network sizes.

    Shapes:
        ``velocity(t, x)``: t (B,), x (B, 2) -> (B, 2); ``pressure(t, x)`` -> (B,).
    """

    def __init__(
        self, method: str, hidden: int = 64, depth: int = 3, n_frequencies: int = 2
    ) -> None:
        super().__init__()
        check(method in METHODS, "method", method, f"one of {METHODS}")
        self.method = method
        self.u: nn.Module
        if method == "ncl":
            self.u = DivFreeMatrixField(
                2,
                hidden=hidden,
                depth=depth,
                time_dependent=True,
                periodic=True,
                n_frequencies=n_frequencies,
            )
        else:
            self.u = PeriodicMLP(2, hidden, depth, n_frequencies)
        self.p = PeriodicMLP(1, hidden, depth, n_frequencies)

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """Velocity u(t, x), (B, 2)."""
        return self.u(t, x)

    def pressure(self, t: Tensor, x: Tensor) -> Tensor:
        """Pressure p(t, x), (B,)."""
        return self.p(t, x).squeeze(-1)


def _derivatives(model: FluidModel, t: Tensor, x: Tensor) -> dict[str, Tensor]:
    """u, ∂_t u, ∂_j u (2, B, 2), Δu, ∇p, div u at (t, x): forward-mode, rows independent."""
    basis = torch.eye(2, dtype=x.dtype).unsqueeze(1).expand(2, x.shape[0], 2)

    def u_of_x(y: Tensor) -> Tensor:
        return model.velocity(t, y)

    def first_second(e: Tensor) -> Any:
        return jvp(lambda y: jvp(u_of_x, (y,), (e,))[1], (x,), (e,))

    du, ddu = vmap(first_second)(basis)  # (2, B, 2) each: ∂_j u, ∂_j ∂_j u
    u, du_dt = jvp(lambda s: model.velocity(s, x), (t,), (torch.ones_like(t),))[:2]
    dp = vmap(lambda e: jvp(lambda y: model.pressure(t, y), (x,), (e,))[1])(basis)  # (2, B)
    return {
        "u": u,
        "du_dt": du_dt,
        "du": du,
        "lap_u": ddu.sum(0),
        "grad_p": dp.T,
        "div_u": du[0, :, 0] + du[1, :, 1],
    }


def momentum_residual(model: FluidModel, t: Tensor, x: Tensor, nu: float) -> dict[str, Tensor]:
    """``∂_t u + (u·∇)u + ∇p - ν Δu`` (B, 2) and ``div u`` (B,) at collocation points."""
    d = _derivatives(model, t, x)
    advect = d["u"][:, 0:1] * d["du"][0] + d["u"][:, 1:2] * d["du"][1]  # sum_j u_j ∂_j u
    res = d["du_dt"] + advect + d["grad_p"] - nu * d["lap_u"]
    return {"residual": res, "div_u": d["div_u"], "u": d["u"]}


def velocity_error(model: FluidModel, nu: float, grid: int, times: list[float]) -> dict[str, float]:
    """Relative L2 error against the Taylor–Green velocity and mean |div u| on a grid.

    Args:
        model: the fluid model.
        nu: viscosity of the reference solution.
        grid: points per side of the uniform grid on ``[0, 2π)^2``.
        times: the times evaluated.

    Returns:
        ``{"rel_l2": ..., "mean_abs_div": ...}`` over all grid points and times.
    """
    dev = next(model.parameters()).device
    g = torch.arange(grid, dtype=torch.float32, device=dev) * (2 * math.pi / grid)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    num = den = div_sum = 0.0
    for t in times:
        tt = torch.full((pts.shape[0],), float(t), device=dev)
        basis = torch.eye(2, device=dev).unsqueeze(1).expand(2, pts.shape[0], 2)
        with torch.no_grad():
            u = model.velocity(tt, pts)
            du = vmap(lambda e, tt=tt: jvp(lambda y: model.velocity(tt, y), (pts,), (e,))[1])(basis)
        ref, _ = taylor_green(tt, pts, nu)
        num += float(((u - ref) ** 2).sum())
        den += float((ref**2).sum())
        div_sum += float((du[0, :, 0] + du[1, :, 1]).abs().mean())
    return {"rel_l2": math.sqrt(num / den), "mean_abs_div": div_sum / len(times)}
