"""sdeint on the Ornstein-Uhlenbeck process, whose marginals are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.integrate import sdeint

F64 = torch.float64


class _OU(nn.Module):
    """dX = -theta X dt + sigma dW (diagonal noise, Ito)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, theta: float = 1.5, sigma: float = 0.8) -> None:
        super().__init__()
        self.theta = theta
        self.sigma = sigma

    def f(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.theta * x

    def g(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.sigma)


def test_ou_moments_and_nfe() -> None:
    """Mean x_0 e^{-theta t} and variance sigma^2 (1 - e^{-2 theta t}) / (2 theta).

    n = 4000 paths: the mean's standard error is ~0.008, tested at 4 SE (false alarm 6e-5);
    Euler's O(dt) bias at dt = 0.01 is ~1e-3, well inside. Variance: relative SE of a sample
    variance is sqrt(2 / n) = 2.2%, tested at 4 SE plus 2% for the O(dt) bias.
    """
    sde = _OU()
    n = 4000
    x_0 = torch.full((n, 1), 2.0, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    sol = sdeint(sde, x_0, t, method="euler", dt=0.01)
    assert sol.x.shape == (3, n, 1)
    # Euler-Maruyama: one drift evaluation per step, plus torchsde's one shape check at t_0
    assert sol.nfe == 100 + 1
    assert sol.extra["nfe_diffusion"] == 100 + 1
    for i, s in enumerate(t.tolist()):
        if s == 0:
            continue
        mean = 2.0 * math.exp(-sde.theta * s)
        var = sde.sigma**2 * (1 - math.exp(-2 * sde.theta * s)) / (2 * sde.theta)
        xs = sol.x[i, :, 0]
        assert abs(float(xs.mean()) - mean) < 4 * math.sqrt(var / n)
        assert abs(float(xs.var()) / var - 1) < 4 * math.sqrt(2 / n) + 0.02


def test_bad_input_raises_flowfields_error() -> None:
    sde = _OU()
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(FlowfieldsError, match="method"):
        sdeint(sde, torch.zeros(2, 1), t, method="rk4")
    with pytest.raises(FlowfieldsError, match="x_0"):
        sdeint(sde, torch.zeros(2), t)
    with pytest.raises(FlowfieldsError, match="noise_type"):
        sdeint(object(), torch.zeros(2, 1), t)
    with pytest.raises(FlowfieldsError, match="increasing"):
        sdeint(sde, torch.zeros(2, 1), t.flip(0))


class _LearnableOU(nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(1.5, dtype=F64))
        self.sigma = nn.Parameter(torch.tensor(0.8, dtype=F64))

    def f(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.theta * x

    def g(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.ones_like(x)


def test_adjoint_gradients_approach_direct_backprop() -> None:
    """Same Brownian path: the adjoint's backward re-solve differs from backprop through the
    solver by O(dt) (strong order 1 of Milstein), so the gap shrinks with dt."""
    import torchsde

    sde = _LearnableOU()
    x_0 = torch.full((32, 1), 2.0, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(32, 1), dtype=F64, entropy=3)
    gaps = []
    for dt in (8e-3, 2e-3):
        grads = []
        for adjoint in (False, True):
            sol = sdeint(sde, x_0, t, method="milstein", dt=dt, bm=bm, adjoint=adjoint)
            loss = (sol.x[-1] ** 2).mean()
            grads.append(torch.stack(torch.autograd.grad(loss, [sde.theta, sde.sigma])))
        gaps.append(float((grads[0] - grads[1]).abs().max() / grads[0].abs().max()))
    assert gaps[1] < 0.01, gaps
    assert gaps[1] < gaps[0] / 2
