"""Orders of convergence: adaptive ODE solvers (global error vs tolerance, and error vs work)
and SDE solvers (strong order on geometric Brownian motion against its closed form)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.integrate import SOLVERS, odeint, sdeint

F64 = torch.float64
ADAPTIVE = [name for name, s in SOLVERS.items() if s.adaptive]
#: tolerances in each method's asymptotic regime (second-order ones need ~1e4 steps at 1e-8)
_TOLS = {
    "adaptive_heun": range(4, 8),
    "fehlberg2": range(4, 9),
    "bosh3": range(5, 11),
    "dopri5": range(6, 12),
    "dopri8": range(6, 12),
}


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_global_error_follows_the_tolerance(method: str) -> None:
    """x' = -2 t x on [0, 3] (x = x_0 e^{-t^2}) at rtol = atol = tol over five or six decades.

    Two properties, as in diffrax's and DifferentialEquations.jl's convergence tests:
    - tolerance proportionality: the slope of log(global error) against log(tol) lies in
      [0.8, 1.2] (measured 0.9-1.1) and the error stays below 500 tol;
    - the work-precision slope, log(error) against log(NFE), is at most -(order - 0.3): the
      error falls at least as fast as NFE^-order (measured: 1.9, 2.6, 3.3, 5.9, 12.2 for
      adaptive_heun, fehlberg2, bosh3, dopri5, dopri8). A solver of lower order than it
      claims, or one that ignored the tolerance, fails one of the two.
    """
    x_0 = torch.tensor([1.0, -0.5], dtype=F64)
    T = 3.0
    exact = x_0 * math.exp(-(T**2))
    tols = [10.0**-k for k in _TOLS[method]]
    errs, nfes = [], []
    for tol in tols:
        sol = odeint(lambda s, x: -2 * s * x, x_0, [0.0, T], method=method, rtol=tol, atol=tol)
        errs.append(float((sol.x[-1] - exact).abs().max()))
        nfes.append(sol.nfe)
    slope = np.polyfit(np.log(tols), np.log(errs), 1)[0]
    work = np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert 0.8 <= slope <= 1.2, (method, slope, errs)
    assert all(e < 500 * t for e, t in zip(errs, tols)), (method, errs)
    assert work <= -(SOLVERS[method].order - 0.3), (method, work, nfes)
    assert nfes == sorted(nfes)  # tighter tolerance, more work


class _GBM(nn.Module):
    """dX = mu X dt + sigma X dW (Ito, diagonal noise): X_T = X_0 exp((mu - sigma^2/2) T +
    sigma W_T)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, mu: float, sigma: float) -> None:
        super().__init__()
        self.mu, self.sigma = mu, sigma

    def f(self, t, x):
        return self.mu * x

    def g(self, t, x):
        return self.sigma * x


@pytest.mark.parametrize("method, order", [("euler", 0.5), ("milstein", 1.0)])
def test_sde_strong_order_on_geometric_brownian_motion(method: str, order: float) -> None:
    """Strong error E|X_T^dt - X_T| on the same Brownian paths (torchsde BrownianInterval,
    entropy 1234, 2000 paths, mu = sigma = 1, T = 1), dt = 2^-3 .. 2^-8: the fitted slope of
    log(error) against log(dt) is the strong order +- 0.1. Measured over entropies 1..5:
    Euler-Maruyama 0.47-0.49, Milstein 0.96-0.97 (the band is > 5 times that spread and
    separates 0.5 from 1.0)."""
    import torchsde

    n, T = 2000, 1.0
    x_0 = torch.ones(n, 1, dtype=F64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=T, size=(n, 1), dtype=F64, entropy=1234)
    exact = x_0 * torch.exp((1.0 - 0.5) * T + bm(0.0, T))
    sde = _GBM(1.0, 1.0)
    dts = [2.0**-k for k in range(3, 9)]
    errs = []
    with torch.no_grad():
        for dt in dts:
            sol = sdeint(sde, x_0, [0.0, T], method=method, dt=dt, bm=bm)
            errs.append(float((sol.x[-1] - exact).abs().mean()))
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.1, (method, slope, errs)


class _Renamed(nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self) -> None:
        super().__init__()
        self.t_dtypes: set[torch.dtype] = set()

    def drift(self, t, x):
        self.t_dtypes.add(t.dtype)
        return -x

    def noise(self, t, x):
        return 0.1 * torch.ones_like(x)


@pytest.mark.parametrize(
    "names", [{"drift": "drift", "diffusion": "noise"}, {"f": "drift", "g": "noise"}]
)
def test_sdeint_names_in_torchsdes_form_and_by_method(names: dict) -> None:
    """torchsde's own ``names`` form ({"drift": ..., "diffusion": ...}) works, as documented;
    so does naming the methods (f, g)."""
    import torchsde

    x_0 = torch.ones(4, 1, dtype=F64)

    def bm():  # a fresh Brownian motion with the same seed for each solve
        return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(4, 1), dtype=F64, entropy=3)

    sde = _Renamed()
    sol = sdeint(sde, x_0, [0.0, 1.0], method="euler", dt=0.01, bm=bm(), names=names)
    assert sde.t_dtypes == {F64}  # t in the state's dtype, as odeint's fields get it
    ref = torchsde.sdeint(
        _Renamed(),
        x_0,
        torch.tensor([0.0, 1.0], dtype=F64),
        method="euler",
        dt=0.01,
        bm=bm(),
        names={"drift": "drift", "diffusion": "noise"},
    )
    torch.testing.assert_close(sol.x, ref, rtol=1e-6, atol=1e-7)
    assert sol.nfe == 101 and sol.backend == "torchsde"


@pytest.mark.parametrize(
    "names, fragment",
    [
        ({"drfit": "drift"}, "drfit"),
        ({"drift": "missing"}, "a method of the SDE"),
        ({"drift": "drift", "f": "drift"}, "once"),
        (["drift"], "names"),
    ],
)
def test_sdeint_bad_names(names, fragment: str) -> None:
    with pytest.raises(FlowfieldsError, match=fragment):
        sdeint(_Renamed(), torch.ones(2, 1), [0.0, 1.0], names=names)
