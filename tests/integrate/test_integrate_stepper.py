"""Our fixed-step stepper: gradients w.r.t. the times (against torchdiffeq), the retraction
hook, torchdiffeq's callback API, and who steps which solve.

The time-gradient cases are torchdiffeq's own (tests/problems.py and tests/gradient_tests.py
of rtqichen/torchdiffeq, MIT licence): the ``constant``, ``sine`` and ``linear`` problems on
``t = linspace(1, 8, 10)``, differentiated w.r.t. ``y0``, ``t`` and the field's parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.integrate import SOLVERS, ODEOptions, odeint

F64 = torch.float64
FIXED = [name for name, s in SOLVERS.items() if not s.adaptive]
ADAPTIVE = [name for name, s in SOLVERS.items() if s.adaptive]


# ---------------------------------------------------------------- torchdiffeq's problems
class ConstantODE(nn.Module):
    """torchdiffeq tests/problems.py: y' = a + (y - (a t + b))^5, y = a t + b."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.2, dtype=F64))
        self.b = nn.Parameter(torch.tensor(3.0, dtype=F64))

    def forward(self, t, y):
        return self.a + (y - (self.a * t + self.b)) ** 5

    def y_exact(self, t):
        return self.a * t + self.b


class SineODE(nn.Module):
    """torchdiffeq tests/problems.py: y' = 2 y / t + t^4 sin 2t - t^2 + 4 t^3."""

    def forward(self, t, y):
        return 2 * y / t + t**4 * torch.sin(2 * t) - t**2 + 4 * t**3

    def y_exact(self, t):
        return (
            -0.5 * t**4 * torch.cos(2 * t)
            + 0.5 * t**3 * torch.sin(2 * t)
            + 0.25 * t**2 * torch.cos(2 * t)
            - t**3
            + 2 * t**4
            + (math.pi - 0.25) * t**2
        )


class LinearODE(nn.Module):
    """torchdiffeq tests/problems.py: y' = A y with A = U - U^T (10 x 10), y(t) = expm(A t) 1."""

    def __init__(self, dim: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        U = torch.randn(dim, dim, generator=g, dtype=F64) * 0.1
        self.A = nn.Parameter(2 * U - (U + U.T))
        self.dim = dim

    def forward(self, t, y):
        return (self.A @ y.reshape(self.dim, 1)).reshape(-1)

    def y_exact(self, t):
        return torch.stack(
            [torch.linalg.matrix_exp(self.A * s) @ torch.ones(self.dim, dtype=F64) for s in t]
        )


PROBLEMS = {"constant": ConstantODE, "sine": SineODE, "linear": LinearODE}


def _problem(name: str):
    f = PROBLEMS[name]()
    t = torch.linspace(1.0, 8.0, 10, dtype=F64, requires_grad=True)
    with torch.no_grad():
        y0 = f.y_exact(t.detach()[:1])[0].clone()
    return f, y0.requires_grad_(True), t


def _grads(fn, f, y0, t):
    ys = fn(f, y0, t)
    g = torch.Generator().manual_seed(0)
    cot = torch.rand(ys.shape, generator=g, dtype=F64)
    inputs = [y0, t, *f.parameters()]
    return ys.detach(), torch.autograd.grad((ys * cot).sum(), inputs)


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_time_gradients_match_torchdiffeq(method: str, problem: str) -> None:
    """Same grid, same tableau: values and gradients w.r.t. y0, t and the parameters agree
    with torchdiffeq's fixed-grid solver to rounding (before the stepper carried t, the
    gradient w.r.t. t was exactly zero here)."""
    f, y0, t = _problem(problem)
    ours = _grads(lambda f, y, s: odeint(f, y, s, method=method).x, f, y0, t)
    ref = _grads(lambda f, y, s: torchdiffeq.odeint(f, y, s, method=method), f, y0, t)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=1e-10)
    for mine, theirs in zip(ours[1], ref[1]):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
    assert float(ours[1][1].abs().max()) > 1e-3  # the time gradient is really there


@pytest.mark.parametrize("method", FIXED)
def test_gradcheck_wrt_initial_state_and_times(method: str) -> None:
    """torchdiffeq's gradient test, on our solver: gradcheck w.r.t. (y0, t), including the
    sub-steps of a step_size grid and integration backward in time."""
    f = ConstantODE()
    t = torch.linspace(1.0, 2.0, 4, dtype=F64, requires_grad=True)
    y0 = torch.tensor(3.2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y, s: odeint(f, y, s, method=method).x, (y0, t))
    assert torch.autograd.gradcheck(
        lambda y, s: odeint(f, y, s, method=method, step_size=0.15).x, (y0, t)
    )
    assert torch.autograd.gradcheck(
        lambda y, s: odeint(f, y, s.flip(0), method=method, step_size=0.15).x, (y0, t)
    )


@pytest.mark.parametrize("backend", ["native", "torchdiffeq"])
def test_time_gradient_of_the_final_state_is_the_field(backend: str) -> None:
    """d x(t_1) / d t_1 = v(t_1, x(t_1)) and d x(t_1) / d t_0 = -Phi v(t_0, x_0) for
    x' = -x (Phi = e^{-(t_1 - t_0)}): rk4 on a 0.01 grid is accurate to ~1e-9."""
    t = torch.tensor([0.2, 1.3], dtype=F64, requires_grad=True)
    x0 = torch.tensor([1.5], dtype=F64)
    sol = odeint(lambda s, x: -x, x0, t, ODEOptions("rk4", step_size=0.01, backend=backend))
    assert sol.backend == backend
    g0, g1 = torch.autograd.grad(sol.x[-1].sum(), t)[0].tolist()
    x1 = 1.5 * math.exp(-1.1)
    assert abs(float(g1) - (-x1)) < 1e-8
    assert abs(float(g0) - x1) < 1e-8  # -Phi * v(t_0, x_0) = -e^{-1.1} * (-1.5)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_time_gradients_match_closed_form(method: str) -> None:
    """Through torchdiffeq (the tolerance scaled to the order: second-order methods would
    need ~1e5 steps at 1e-10)."""
    tol = 1e-10 if SOLVERS[method].order >= 3 else 1e-7
    t = torch.tensor([0.2, 1.3], dtype=F64, requires_grad=True)
    x0 = torch.tensor([1.5], dtype=F64)
    sol = odeint(lambda s, x: -x, x0, t, method=method, rtol=tol, atol=tol)
    g0, g1 = torch.autograd.grad(sol.x[-1].sum(), t)[0].tolist()
    x1 = 1.5 * math.exp(-1.1)
    assert abs(g1 + x1) < 1e4 * tol and abs(g0 - x1) < 1e4 * tol


# ---------------------------------------------------------------- retraction
def _rotation(omega: float):
    a = torch.tensor([[0.0, -omega, 0.0], [omega, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    return a, (lambda s, x: x @ a.T)


def _project(x: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    y = x + dx
    return y / y.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("method", FIXED)
def test_retraction_keeps_the_sphere_and_converges_at_the_methods_order(method: str) -> None:
    """x' = A x (a rotation) on the unit sphere with the projection retraction: every state
    lies on the sphere to rounding (the plain update drifts off it), and the error against
    the exact rotation falls at the method's order."""
    a, v = _rotation(2.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, generator=g, dtype=F64)
    x0 = x0 / x0.norm(dim=1, keepdim=True)
    T = 1.5
    exact = x0 @ torch.linalg.matrix_exp(a * T).T
    errs, hs = [], []
    for n in (16, 32, 64, 128):
        sol = odeint(v, x0, [0.0, T], method=method, step_size=T / n, retraction=_project)
        assert sol.backend == "native"
        assert float((sol.x.norm(dim=-1) - 1).abs().max()) < 1e-14
        errs.append(float((sol.x[-1] - exact).abs().max()))
        hs.append(T / n)
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - SOLVERS[method].order) < 0.35, (method, slope, errs)
    plain = odeint(v, x0, [0.0, T], method="euler", step_size=T / 16)
    assert float((plain.x[-1].norm(dim=-1) - 1).abs().max()) > 1e-2


@pytest.mark.parametrize("method", FIXED)
def test_retraction_runs_at_every_stage_and_step(method: str) -> None:
    calls: list[tuple[float, float]] = []

    def retraction(x, dx):
        calls.append((float(x.sum()), float(dx.sum())))
        return x + dx

    v = lambda s, x: -x * (1 + s)  # noqa: E731
    x0 = torch.ones(3, dtype=F64)
    sol = odeint(v, x0, [0.0, 1.0], method=method, step_size=0.1, retraction=retraction)
    stages = SOLVERS[method].stages
    assert len(calls) == 10 * stages  # stages 2..s and the step itself
    plain = odeint(v, x0, [0.0, 1.0], method=method, step_size=0.1)
    torch.testing.assert_close(sol.x, plain.x, rtol=1e-14, atol=1e-14)


def test_retraction_with_tuple_states() -> None:
    def retraction(x, dx):
        return (_project(x[0], dx[0]), x[1] + dx[1])

    _, v = _rotation(1.0)
    x0 = (torch.tensor([[1.0, 0.0, 0.0]], dtype=F64), torch.zeros(1, dtype=F64))
    sol = odeint(
        lambda s, st: (v(s, st[0]), torch.ones(1, dtype=F64)),
        x0,
        [0.0, 1.0],
        method="rk4",
        step_size=0.1,
        retraction=retraction,
    )
    assert isinstance(sol.x, tuple)
    assert float((sol.x[0].norm(dim=-1) - 1).abs().max()) < 1e-14
    torch.testing.assert_close(sol.x[1][-1], torch.ones(1, dtype=F64))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"method": "dopri5"}, "tangent-projected"),
        ({"method": "rk4", "step_size": 0.1, "adjoint": True}, "adjoint"),
        ({"solver": ODEOptions("rk4", step_size=0.1, backend="torchdiffeq")}, "torchdiffeq"),
    ],
)
def test_retraction_where_it_cannot_run_is_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(FlowfieldsError, match=fragment):
        odeint(lambda s, x: -x, torch.ones(2), [0.0, 1.0], retraction=_project, **kwargs)


# ---------------------------------------------------------------- callbacks
class _Recorder(nn.Module):
    def __init__(self, accept: bool = True) -> None:
        super().__init__()
        self.steps: list[tuple[float, float]] = []
        self.accepted: list[tuple[float, float]] = []
        self.rejected: list[float] = []
        if not accept:
            self.callback_accept_step = None  # type: ignore[assignment]

    def forward(self, t, x):
        return -x

    def callback_step(self, t0, y0, dt):
        self.steps.append((float(t0), float(dt)))

    def callback_accept_step(self, t0, y0, dt):
        self.accepted.append((float(t0), float(dt)))

    def callback_reject_step(self, t0, y0, dt):
        self.rejected.append(float(t0))


@pytest.mark.parametrize("reverse", [False, True])
def test_native_stepper_calls_step_and_accept_callbacks(reverse: bool) -> None:
    f = _Recorder()
    t = [0.0, 0.5, 1.0][::-1] if reverse else [0.0, 0.5, 1.0]
    sol = odeint(f, torch.ones(2, dtype=F64), t, method="midpoint", step_size=0.25)
    assert sol.backend == "native"
    sign = -1.0 if reverse else 1.0
    expected = [v for i in range(4) for v in (t[0] + sign * 0.25 * i, sign * 0.25)]
    assert [v for step in f.steps for v in step] == pytest.approx(expected)
    assert [v for step in f.accepted for v in step] == pytest.approx(expected)
    assert f.rejected == []


@pytest.mark.parametrize("reverse", [False, True])
def test_adaptive_solves_forward_callbacks_with_signed_dt(reverse: bool) -> None:
    """torchdiffeq looks callbacks up on the function it is given: our wrapper must forward
    them (it did not: they were silently ignored)."""
    f = _Recorder()
    t = [1.0, 0.0] if reverse else [0.0, 1.0]
    odeint(f, torch.ones(2, dtype=F64), t, method="dopri5", rtol=1e-8, atol=1e-8)
    assert len(f.steps) >= 3 and len(f.accepted) >= 3
    assert len(f.steps) == len(f.accepted) + len(f.rejected)
    dts = [dt for _, dt in f.accepted]
    assert all((dt < 0) == reverse for dt in dts)
    assert sum(dts) == pytest.approx(t[1] - t[0], abs=1e-12)


def test_accept_callback_on_torchdiffeq_fixed_step_is_refused() -> None:
    """torchdiffeq's fixed-step solvers never call callback_accept_step: refuse, not ignore."""
    f = _Recorder()
    with pytest.raises(FlowfieldsError, match="callback_accept_step"):
        odeint(f, torch.ones(2, dtype=F64), [0.0, 1.0], method="rk4", step_size=0.1, adjoint=True)
    g = _Recorder(accept=False)
    odeint(g, torch.ones(2, dtype=F64), [0.0, 1.0], method="rk4", step_size=0.1, adjoint=True)
    assert len(g.steps) == 10  # callback_step is honoured there


# ---------------------------------------------------------------- who steps which solve
@pytest.mark.parametrize(
    "kwargs, backend",
    [
        ({"method": "rk4", "step_size": 0.1}, "native"),
        ({"method": "euler", "t": torch.linspace(0, 1, 1001, dtype=F64)}, "native"),
        ({"method": "rk4", "step_size": 0.1, "adjoint": True}, "torchdiffeq"),
        ({"method": "rk4", "step_size": 0.1, "options": {"interp": "linear"}}, "torchdiffeq"),
        ({"method": "rk4", "step_size": 0.1, "options": {"perturb": True}}, "torchdiffeq"),
        ({"solver": ODEOptions("rk4", step_size=0.1, backend="torchdiffeq")}, "torchdiffeq"),
        ({"solver": ODEOptions("rk4", step_size=0.1, backend="native")}, "native"),
        ({"method": "dopri5"}, "torchdiffeq"),
        ({"method": "bosh3", "adjoint": True}, "torchdiffeq"),
    ],
)
def test_which_backend_steps_the_solve(kwargs: dict, backend: str) -> None:
    t = kwargs.pop("t", [0.0, 1.0])
    x0 = torch.ones(2, dtype=F64, requires_grad=True)
    sol = odeint(lambda s, x: -x, x0, t, **kwargs)
    assert sol.backend == backend
    torch.testing.assert_close(
        sol.x[-1].detach(), torch.full((2,), math.exp(-1.0), dtype=F64), rtol=1e-3, atol=0
    )


def test_native_backend_is_refused_where_it_cannot_run() -> None:
    with pytest.raises(FlowfieldsError, match="backend"):
        ODEOptions("dopri5", backend="native")
    with pytest.raises(FlowfieldsError, match="backend"):
        ODEOptions("rk4", step_size=0.1, adjoint=True, backend="native")
    with pytest.raises(FlowfieldsError, match="interp"):
        odeint(
            lambda s, x: -x,
            torch.ones(2),
            [0.0, 1.0],
            ODEOptions("rk4", step_size=0.1, backend="native"),
            options={"interp": "linear"},
        )
