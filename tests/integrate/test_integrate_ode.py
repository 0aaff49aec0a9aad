"""odeint against closed forms (matrix exponential), convergence orders, NFE counts, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.integrate import SOLVERS, odeint, time_grid

F64 = torch.float64
FIXED = [name for name, s in SOLVERS.items() if not s.adaptive]
ADAPTIVE = [name for name, s in SOLVERS.items() if s.adaptive]


def _linear_problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    a = 0.7 * torch.randn(3, 3, generator=g, dtype=F64)
    x_0 = torch.randn(4, 3, generator=g, dtype=F64)  # 4 initial conditions, batched
    return a, x_0


def _expm_solution(a: torch.Tensor, x_0: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """x(t) = x_0 expm(t A)^T for row-vector states, x' = x A^T, with x(t[0]) = x_0."""
    a_np, x_np = a.numpy(), x_0.numpy()
    t0 = float(t[0])
    return np.stack([x_np @ scipy.linalg.expm((float(s) - t0) * a_np).T for s in t])


@pytest.mark.parametrize("method", list(SOLVERS))
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_linear_ode_matches_matrix_exponential(method: str, direction: str) -> None:
    a, x_0 = _linear_problem()
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    if direction == "backward":
        t = t.flip(0)
    info = SOLVERS[method]
    if info.adaptive:
        tol = 1e-9 if info.order >= 3 else 1e-8
        sol = odeint(lambda s, x: x @ a.T, x_0, t, method=method, rtol=tol, atol=tol)
        allowed = 1e-6 if info.order >= 3 else 1e-5
    else:
        h = 1e-3 if info.order == 1 else 1e-2
        sol = odeint(lambda s, x: x @ a.T, x_0, t, method=method, step_size=h)
        allowed = 20 * h**info.order
    expected = _expm_solution(a, x_0, t)
    assert sol.x.shape == (5, 4, 3)
    assert sol.x.dtype == F64
    assert torch.equal(sol.x[0], x_0)
    err = np.abs(sol.x.numpy() - expected).max()
    assert err < allowed, f"{method} {direction}: max error {err:.2e} >= {allowed:.1e}"


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_convergence_order(method: str) -> None:
    """Slope of log(error) vs log(step) on a non-autonomous ODE is the method's order +-0.3.

    x' = -2 t x  has  x(t) = x(0) exp(-t^2); integrate 0 -> 1.7 with 16..128 equal steps
    (asymptotic regime for every method here). Time-dependence checks each stage's t.
    """
    order = SOLVERS[method].order
    x_0 = torch.tensor([1.0, -0.5], dtype=F64)
    t_end = 1.7
    exact = x_0 * math.exp(-(t_end**2))
    errs, steps = [], []
    for n in (16, 32, 64, 128):
        sol = odeint(
            lambda s, x: -2 * s * x,
            x_0,
            torch.tensor([0.0, t_end], dtype=F64),
            method=method,
            step_size=t_end / n,
        )
        assert sol.nfe == n * SOLVERS[method].stages
        steps.append(t_end / n)
        errs.append(float((sol.x[-1] - exact).abs().max()))
    slope = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, f"{method}: slope {slope:.2f}, order {order}"


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("native", [True, False])
def test_fixed_step_nfe_is_exact(method: str, native: bool) -> None:
    """NFE = steps * stages, counted by the field itself; native and torchdiffeq paths agree."""
    stages = SOLVERS[method].stages
    x_0 = torch.ones(2, dtype=F64)
    calls = []

    def v(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -x * (1 + s)

    # options (even empty of meaning) route the solve through torchdiffeq instead
    opts = None if native else {"interp": "linear"}
    # 1/7 is not representable: the grid must still have exactly 7 steps.
    sol = odeint(v, x_0, torch.tensor([0.0, 1.0]), method=method, step_size=1 / 7, options=opts)
    assert sol.nfe == len(calls) == 7 * stages
    # output grid of 11 times and step 0.05: 2 steps per interval, 20 in all, backward in time.
    t = torch.linspace(1.0, 0.0, 11, dtype=F64)
    calls.clear()
    sol = odeint(v, x_0, t, method=method, step_size=0.05, options=opts)
    assert sol.nfe == len(calls) == 20 * stages
    assert sol.x.shape == (11, 2)
    ref = odeint(v, x_0, t, method="dopri5", rtol=1e-10, atol=1e-10).x
    order = SOLVERS[method].order
    assert float((sol.x - ref).abs().max()) < 10 * 0.05**order
    # without step_size, one step per interval of t
    calls.clear()
    sol = odeint(v, x_0, t, method=method, options=opts)
    assert sol.nfe == len(calls) == 10 * stages
    assert sol.method == method


@pytest.mark.parametrize("method", FIXED)
def test_native_fixed_step_matches_torchdiffeq(method: str) -> None:
    a, x_0 = _linear_problem()
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    ours = odeint(lambda s, x: torch.tanh(x @ a.T) * s, x_0, t, method=method, step_size=0.05)
    tdq = odeint(
        lambda s, x: torch.tanh(x @ a.T) * s,
        x_0,
        t,
        method=method,
        step_size=0.05,
        options={"interp": "linear"},
    )
    torch.testing.assert_close(ours.x, tdq.x, rtol=1e-13, atol=1e-13)


def test_time_grid_contains_requested_times() -> None:
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    g = time_grid(t, 0.1)
    assert len(g) == 1 + 3 + 7
    for s in t:
        assert (g == s).any()
    assert torch.all(g[1:] > g[:-1])


def test_adaptive_nfe_counts_calls_and_shrinks_with_looser_tolerance() -> None:
    a, x_0 = _linear_problem()
    calls = []

    def v(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x @ a.T

    t = torch.tensor([0.0, 1.0], dtype=F64)
    tight = odeint(v, x_0, t, method="dopri5", rtol=1e-9, atol=1e-9)
    assert tight.nfe == len(calls)
    loose = odeint(v, x_0, t, method="dopri5", rtol=1e-3, atol=1e-3)
    assert loose.nfe < tight.nfe


def test_tuple_state_and_float32_state_keep_shapes_and_dtype() -> None:
    x = torch.randn(5, 2)
    c = torch.zeros(5)

    def v(s: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        y, _ = state
        return -y, y.sum(1)

    sol = odeint(v, (x, c), torch.tensor([0.0, 0.5, 1.0], dtype=F64), method="rk4", step_size=0.01)
    assert isinstance(sol.x, tuple)
    assert sol.x[0].shape == (3, 5, 2) and sol.x[1].shape == (3, 5)
    assert sol.x[0].dtype == torch.float32
    y_1, c_1 = sol.x_final
    torch.testing.assert_close(y_1, x * math.exp(-1.0), rtol=1e-5, atol=1e-6)
    # c' = sum(y) = sum(x) e^-t  ->  c(1) = sum(x) (1 - e^-1)
    torch.testing.assert_close(c_1, x.sum(1) * (1 - math.exp(-1.0)), rtol=1e-5, atol=1e-5)


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.a = nn.Parameter(0.5 * torch.randn(3, 3, generator=g, dtype=F64))
        self.b = nn.Parameter(0.1 * torch.randn(3, generator=g, dtype=F64))

    def forward(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.a.T) * (1 + s) + self.b


@pytest.mark.parametrize(
    "method,kw", [("dopri5", {"rtol": 1e-11, "atol": 1e-11}), ("rk4", {"step_size": 1e-2})]
)
def test_adjoint_gradients_equal_direct_backprop(method: str, kw: dict) -> None:
    field = _Linear()
    x_0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    grads = []
    for adjoint in (False, True):
        sol = odeint(field, x_0, t, method=method, adjoint=adjoint, **kw)
        loss = (sol.x[-1] ** 2).sum() + sol.x[1].sum()
        grads.append(torch.autograd.grad(loss, [x_0, field.a, field.b]))
        if adjoint:
            assert sol.nfe_backward > 0
        else:
            assert sol.nfe_backward == 0
    for g_direct, g_adj in zip(*grads):
        # rk4: discretise-then-optimise vs optimise-then-discretise differ by O(h^4) ~ 1e-8.
        torch.testing.assert_close(g_adj, g_direct, rtol=1e-6, atol=1e-7)


def test_adjoint_with_tuple_state_and_explicit_params() -> None:
    a = torch.tensor([[-0.5, 0.3], [0.1, -0.2]], dtype=F64, requires_grad=True)
    x_0 = torch.randn(3, 2, dtype=F64)

    def v(s, state):
        x, _ = state
        return x @ a.T, (x**2).sum(1)

    t = torch.tensor([0.0, 1.0], dtype=F64)
    out = []
    for adjoint in (False, True):
        sol = odeint(
            v,
            (x_0, torch.zeros(3, dtype=F64)),
            t,
            rtol=1e-10,
            atol=1e-10,
            adjoint=adjoint,
            adjoint_params=[a] if adjoint else None,
        )
        out.append(torch.autograd.grad(sol.x[1][-1].sum(), a)[0])
    torch.testing.assert_close(out[1], out[0], rtol=1e-6, atol=1e-8)


def test_gradcheck_through_odeint() -> None:
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def f(x_0: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        sol = odeint(lambda s, x: torch.sin(x @ a.T) + s, x_0, t, method="rk4", step_size=0.1)
        return sol.x

    x_0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    a = torch.randn(3, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x_0, a))

    def g(x_0: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return odeint(lambda s, x: torch.sin(x @ a.T), x_0, t.flip(0), rtol=1e-9, atol=1e-9).x

    assert torch.autograd.gradcheck(g, (x_0, a), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"method": "rk45"}, "method"),
        ({"method": "rk4"}, "step_size"),
        ({"method": "euler", "step_size": -0.1}, "step_size"),
        ({"t": torch.tensor([0.0, 0.5, 0.2])}, "strictly increasing or strictly decreasing"),
        ({"t": torch.tensor([0.0, 0.0, 1.0])}, "strictly"),
        ({"t": torch.tensor([0.0])}, "at least 2"),
        ({"t": torch.tensor([[0.0, 1.0]])}, "1-D"),
        ({"t": torch.tensor([0.0, float("nan")])}, "finite"),
        ({"x_0": torch.tensor([1.0, float("nan")])}, "non-finite"),
        ({"x_0": torch.tensor([1, 2])}, "floating"),
        ({"x_0": (torch.ones(2), torch.ones(2, dtype=F64))}, "dtype"),
        ({"x_0": "abc"}, "x_0"),
        ({"rtol": -1.0}, "rtol"),
        ({"options": {"jump_t": "abc"}}, "jump_t"),
        ({"options": {"step_t": [0.5, float("nan")]}}, "step_t"),
        ({"options": {"step_t": [0.25, 0.5], "jump_t": [0.5]}}, r"step_t.*\[0\.5\].*jump_t"),
    ],
)
def test_bad_input_raises_flowfields_error(kwargs: dict, fragment: str) -> None:
    args = {"x_0": torch.ones(2), "t": torch.tensor([0.0, 1.0])}
    args.update(kwargs)
    x_0, t = args.pop("x_0"), args.pop("t")
    with pytest.raises(FlowfieldsError, match=fragment) as info:
        odeint(lambda s, x: x, x_0, t, **args)
    if "method" in kwargs and kwargs["method"] not in SOLVERS:
        assert "dopri5" in str(info.value) and "euler" in str(info.value)


@pytest.mark.parametrize("backward", [False, True])
def test_adaptive_jump_t_on_a_requested_time_steps_onto_every_requested_time(
    backward: bool,
) -> None:
    """``options={"jump_t": ...}`` with a jump at a requested time: solved, exact, on-grid.

    x' = a(t) x with a = -1 before t = 0.5 and +2 after, so x(t) = x_0 e^{-t} up to 0.5 and
    x_0 e^{-0.5} e^{2 (t - 0.5)} after it. The jump sits on a requested time, which torchdiffeq
    refuses when it is also in ``step_t``; every other requested time must still be a solver
    step, not an interpolant. Backward in time, a list ``jump_t`` must still be honoured.
    """
    t = torch.tensor([0.0, 0.25, 0.5, 0.8, 1.0], dtype=F64)
    if backward:
        t = t.flip(0)
    x_0 = torch.tensor([1.0, -0.5], dtype=F64)
    called: list[float] = []

    def v(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        called.append(float(s))
        return (-1.0 if float(s) < 0.5 else 2.0) * x

    def exact(s: float, s0: float) -> float:
        # log x(s) - log x(0) for the piecewise-constant rate, then shift to start at s0
        def log_growth(u: float) -> float:
            return -u if u <= 0.5 else -0.5 + 2.0 * (u - 0.5)

        return math.exp(log_growth(s) - log_growth(s0))

    sol = odeint(v, x_0, t, method="dopri5", rtol=1e-10, atol=1e-10, options={"jump_t": [0.5]})
    s0 = float(t[0])
    expected = torch.stack([x_0 * exact(float(s), s0) for s in t])
    torch.testing.assert_close(sol.x, expected, rtol=1e-8, atol=1e-10)
    assert sol.nfe == len(called)
    # torchdiffeq evaluates a step's last stage a float64 ulp inside the step; an interpolated
    # output time is evaluated neither there nor at the time itself.
    for s in t[1:].tolist():
        near = {s, math.nextafter(s, -math.inf), math.nextafter(s, math.inf)}
        assert near & set(called), f"requested time {s} was interpolated, not stepped onto"
    # The jump is honoured in both directions: the field is evaluated on both sides of 0.5
    # within one ulp (torchdiffeq ignores a list of jump times that it does not negate).
    assert math.nextafter(0.5, -math.inf) in called and math.nextafter(0.5, math.inf) in called


@pytest.mark.parametrize("adjoint", [False, True])
def test_jump_t_gradients_match_closed_form(adjoint: bool) -> None:
    """x' = -a x before t = 0.5 and 2 a x after: x(1) = x_0 e^{a / 2}, d/da = x(1) / 2."""
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)
    x_0 = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)

    def v(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (-a if float(s.detach()) < 0.5 else 2.0 * a) * x

    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    sol = odeint(
        v,
        x_0,
        t,
        rtol=1e-10,
        atol=1e-10,
        options={"jump_t": [0.5]},
        adjoint=adjoint,
        adjoint_params=[a] if adjoint else None,
    )
    g_a, g_x = torch.autograd.grad(sol.x[-1].sum(), [a, x_0])
    e = math.exp(0.35)
    torch.testing.assert_close(g_a, torch.tensor(0.5 * e * -1.0, dtype=F64), rtol=1e-7, atol=0)
    torch.testing.assert_close(g_x, torch.full((2,), e, dtype=F64), rtol=1e-7, atol=0)
