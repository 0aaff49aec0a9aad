"""A diffusion model as a GFlowNet: Gaussian increments forward, a fixed Brownian bridge back.

Zhang et al. (arXiv:2209.02606, sec. 3): a diffusion model is a GFlowNet on a continuous
state space whose backward policy is the fixed noising process. On the time grid
``t_k = k / N`` the trajectory is ``0 = x_0 -> x_1 -> ... -> x_N = x`` in ``R^d`` with

    P_F(x_{k+1} | x_k) = N(x_k + f(x_k, t_k) dt, sigma^2 dt exp(g(x_k, t_k))),
    P_B(x_k | x_{k+1}) = N(x_{k+1} t_k / t_{k+1}, sigma^2 dt t_k / t_{k+1})  (k >= 1),

the second the Brownian bridge from 0 (``P_B(x_0 | x_1) = 1``: ``x_0 = 0``). ``f`` (drift)
and ``g`` (a log-variance correction) come from one MLP on ``(x, t)``. Reward mode: TB with a
learned ``log Z`` on trajectories drawn from ``P_F`` (detached: the log-densities of the
visited states carry the gradient). Data mode: ``x`` from data, ``tau ~ P_B(. | x)``, the ELBO
``E[log P_F(tau) - log P_B(tau | x)]`` maximised (the GFlowNet view of DDPM training).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_finite, check_shape
from flowfields.nn import mlp

__all__ = ["DiffusionGFlowNet"]

_LOG_2PI = math.log(2 * math.pi)


def _normal_log_prob(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Sum over the last dimension of the Gaussian log-density."""
    return -0.5 * (_LOG_2PI + log_var + (x - mean).pow(2) / log_var.exp()).sum(-1)


class DiffusionGFlowNet(nn.Module):
    """Continuous-state GFlowNet with Gaussian forward steps and a Brownian-bridge ``P_B``.

    Args:
        dim: state dimension ``d``.
        steps: number of steps ``N`` >= 2.
        sigma: diffusion scale (> 0).
        hidden, depth: the MLP on ``(x, t)`` (silu) giving drift and log-variance correction.
        log_z: initial ``log Z``.

    Shapes:
        trajectories ``(N + 1, B, d)``; log-probabilities ``(B,)``.
    """

    def __init__(
        self,
        dim: int = 1,
        steps: int = 20,
        sigma: float = 1.0,
        hidden: int = 64,
        depth: int = 2,
        log_z: float = 0.0,
    ) -> None:
        super().__init__()
        check(isinstance(dim, int) and dim >= 1, "dim", dim, "an integer >= 1")
        check(isinstance(steps, int) and steps >= 2, "steps", steps, "an integer >= 2")
        check(sigma > 0 and math.isfinite(sigma), "sigma", sigma, "a finite float > 0")
        self.dim, self.steps, self.sigma = dim, steps, float(sigma)
        self.net = mlp(dim + 1, 2 * dim, hidden, depth, "silu")
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)  # start as Brownian motion: zero drift and correction
        nn.init.zeros_(last.bias)
        self.log_z = nn.Parameter(torch.tensor(float(log_z)))
        self.dt = 1.0 / steps

    def _forward_params(self, x: Tensor, k: Tensor | int) -> tuple[Tensor, Tensor]:
        t = torch.full_like(x[..., :1], float(k) * self.dt) if isinstance(k, int) else k
        out = self.net(torch.cat([x, t], -1))
        drift, g = out[..., : self.dim], out[..., self.dim :]
        mean = x + drift * self.dt
        log_var = math.log(self.sigma**2 * self.dt) + g.clamp(-5.0, 5.0)
        return mean, log_var

    def log_probs(self, xs: Tensor) -> tuple[Tensor, Tensor]:
        """``(log P_F(tau), log P_B(tau | x))`` of trajectories ``xs`` ``(N + 1, B, d)``."""
        check_shape(xs, "xs", ndim=3, last=self.dim)
        check(xs.shape[0] == self.steps + 1, "xs", xs, f"{self.steps + 1} time points")
        n = self.steps
        t = (torch.arange(n, device=xs.device, dtype=xs.dtype) * self.dt)[:, None, None]
        mean, log_var = self._forward_params(xs[:-1], t.expand(n, xs.shape[1], 1))
        log_pf = _normal_log_prob(xs[1:], mean, log_var).sum(0)
        k = torch.arange(1, n, device=xs.device, dtype=xs.dtype)[:, None, None]
        ratio = k / (k + 1)  # t_k / t_{k+1}
        b_mean = xs[2:] * ratio
        b_log_var = torch.log(self.sigma**2 * self.dt * ratio).expand_as(b_mean)
        log_pb = _normal_log_prob(xs[1:-1], b_mean, b_log_var).sum(0)
        return log_pf, log_pb

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Trajectories from ``P_F``, ``(N + 1, batch, d)`` (no gradient)."""
        check(isinstance(batch, int) and batch >= 1, "batch", batch, "an integer >= 1")
        x = torch.zeros(batch, self.dim, dtype=self.log_z.dtype, device=self.log_z.device)
        out = [x]
        for k in range(self.steps):
            mean, log_var = self._forward_params(x, k)
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = mean + (0.5 * log_var).exp() * eps
            out.append(x)
        return torch.stack(out)

    @torch.no_grad()
    def sample_backward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Trajectories from the Brownian bridge ``P_B(. | x)``, ``(N + 1, B, d)``."""
        check_shape(x, "x", ndim=2, last=self.dim)
        out = [x]
        for k in range(self.steps - 1, 0, -1):
            ratio = k / (k + 1)
            std = math.sqrt(self.sigma**2 * self.dt * ratio)
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x * ratio + std * eps
            out.append(x)
        out.append(torch.zeros_like(x))
        return torch.stack(out[::-1])

    def tb_loss(self, xs: Tensor, log_reward: Tensor) -> Tensor:
        """Mean of ``(log Z + log P_F - log R(x_N) - log P_B)^2`` over the batch.

        Shapes: xs ``(N + 1, B, d)``, log_reward ``(B,)`` (finite: ``R > 0``).

        Raises:
            FlowfieldsError: ``log_reward`` of the wrong shape or not finite.
        """
        check_shape(log_reward, "log_reward", ndim=1)
        check(log_reward.shape[0] == xs.shape[1], "log_reward", log_reward, "one per trajectory")
        check_finite(log_reward, "log_reward")
        log_pf, log_pb = self.log_probs(xs)
        return (self.log_z + log_pf - log_reward - log_pb).pow(2).mean()

    def elbo(self, xs: Tensor) -> Tensor:
        """``log P_F(tau) - log P_B(tau | x)`` per trajectory, ``(B,)`` (data mode)."""
        log_pf, log_pb = self.log_probs(xs)
        return log_pf - log_pb
