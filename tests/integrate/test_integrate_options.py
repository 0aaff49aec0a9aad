"""ODEOptions validation, torchdiffeq pass-through options, and every solver failure as one
FlowfieldsError that says what happened and at which t."""

from __future__ import annotations

import math
import re
import time

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.integrate import TORCHDIFFEQ_OPTIONS, ODEOptions, odeint, sdeint, time_grid

F64 = torch.float64


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"method": "rk45"}, "method"),
        ({"rtol": -1e-3}, "rtol"),
        ({"atol": float("nan")}, "atol"),
        ({"rtol": 0.0, "atol": 0.0}, "rtol/atol"),
        ({"rtol": True}, "rtol"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": float("inf")}, "step_size"),
        ({"adjoint": 1}, "adjoint"),
        ({"max_num_steps": 0}, "max_num_steps"),
        ({"max_num_steps": 10.5}, "max_num_steps"),
        ({"backend": "scipy"}, "backend"),
        ({"options": {"safety": 0.8}, "method": "rk4"}, "adaptive"),
        ({"options": {"interp": "linear"}}, "fixed-step"),
        ({"options": {"grid_constructor": None}, "method": "rk4"}, "grid"),
        ({"options": {"step_size": 0.1}, "method": "rk4"}, "ODEOptions"),
        ({"options": {"bogus": 1}}, "bogus"),
        ({"options": [("step_t", 0.5)]}, "options"),
    ],
)
def test_invalid_settings_raise_when_the_record_is_built(kwargs: dict, fragment: str) -> None:
    with pytest.raises(FlowfieldsError, match=fragment):
        ODEOptions(**kwargs)


def test_record_defaults_replace_and_pass_through_set() -> None:
    opts = ODEOptions()
    assert (opts.method, opts.rtol, opts.atol, opts.step_size, opts.adjoint) == (
        "dopri5",
        1e-5,
        1e-5,
        None,
        False,
    )
    assert opts.replace(rtol=1e-3).rtol == 1e-3 and opts.rtol == 1e-5
    with pytest.raises(FlowfieldsError, match="rtoll"):
        opts.replace(rtoll=1e-3)
    with pytest.raises(FlowfieldsError, match="step_size"):
        opts.replace(step_size=-1.0)
    assert set(TORCHDIFFEQ_OPTIONS) >= {"step_t", "jump_t", "interp", "norm"}
    assert ODEOptions(options={"step_t": [0.5]}).options == {"step_t": [0.5]}


def test_keyword_arguments_override_the_record() -> None:
    x0 = torch.ones(2, dtype=F64)
    sol = odeint(lambda s, x: -x, x0, [0.0, 1.0], ODEOptions("dopri5"), method="rk4", step_size=0.5)
    assert sol.method == "rk4" and sol.nfe == 8


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_pure_absolute_tolerance_is_a_valid_request(method: str) -> None:
    x0 = torch.tensor([1.0, -2.0], dtype=F64)
    sol = odeint(lambda s, x: -x, x0, [0.0, 1.0], method=method, rtol=0.0, atol=1e-9)
    torch.testing.assert_close(sol.x[-1], x0 * math.exp(-1.0), rtol=0, atol=1e-7)


# ------------------------------------------------------------------ solver failures
def _t_in(message: str) -> float:
    return float(re.search(r"at t = ([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)", message).group(1))


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
@pytest.mark.parametrize("reverse", [False, True])
def test_nan_from_the_field_under_an_adaptive_method(method: str, reverse: bool) -> None:
    """Used to be torchdiffeq's ``AssertionError: underflow in dt 0.0``."""

    def v(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bad = float(s) > 0.5 if not reverse else float(s) < 0.5
        return x * (float("nan") if bad else -1.0)

    t = [1.0, 0.0] if reverse else [0.0, 1.0]
    with pytest.raises(FlowfieldsError, match="returned NaN or Inf at t = ") as info:
        odeint(v, torch.ones(3, dtype=F64), t, method=method, rtol=1e-6, atol=1e-6)
    onset = _t_in(str(info.value))
    assert abs(onset - 0.5) < 0.1, str(info.value)


def test_nan_at_the_first_evaluation() -> None:
    with pytest.raises(FlowfieldsError, match=r"NaN or Inf at t = 0\b"):
        odeint(lambda s, x: x * float("nan"), torch.ones(2, dtype=F64), [0.0, 1.0])


def test_max_num_steps_exceeded_says_so() -> None:
    """A stiff problem under dopri5: torchdiffeq's ``max_num_steps exceeded`` assertion."""
    with pytest.raises(FlowfieldsError, match=r"max_num_steps = 50 .*stiff") as info:
        odeint(
            lambda s, x: -1e6 * (x - torch.cos(s)),
            torch.ones(2, dtype=F64),
            [0.0, 1.0],
            rtol=1e-8,
            atol=1e-8,
            max_num_steps=50,
        )
    assert 0.0 <= _t_in(str(info.value)) < 1.0


def test_fixed_step_grid_that_would_allocate_terabytes_is_refused_at_once() -> None:
    start = time.process_time()
    with pytest.raises(FlowfieldsError, match=r"999,999,999,900,000 steps .*PB") as info:
        odeint(lambda s, x: -x, torch.ones(2), [0.0, 1.0], method="euler", step_size=1e-15)
    assert "max_num_steps = 1,000,000" in str(info.value)
    assert time.process_time() - start < 1.0
    with pytest.raises(FlowfieldsError, match="max_num_steps"):
        time_grid(torch.tensor([0.0, 1.0], dtype=F64), 1e-7, max_num_steps=1000)
    # raising the cap is the documented way out
    with pytest.raises(FlowfieldsError, match="1,500 steps"):
        odeint(
            lambda s, x: -x,
            torch.ones(2),
            [0.0, 1.5],
            method="euler",
            step_size=1e-3,
            max_num_steps=1000,
        )
    sol = odeint(
        lambda s, x: -x,
        torch.ones(2),
        [0.0, 1.5],
        method="euler",
        step_size=1e-3,
        max_num_steps=2000,
    )
    assert sol.nfe == 1500


@pytest.mark.parametrize(
    "x_0",
    [torch.ones(0, 3), torch.ones(3, 0), (torch.ones(4, 2), torch.ones(0))],
)
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_empty_batch_is_refused(x_0, method: str) -> None:
    """Used to be torchdiffeq's ``underflow in dt`` (adaptive) or a silent empty solve."""
    with pytest.raises(FlowfieldsError, match="empty"):
        odeint(lambda s, x: x, x_0, [0.0, 1.0], method=method, step_size=0.1)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize(
    "field, fragment",
    [
        (lambda s, x: torch.ones(5, dtype=x.dtype), r"shape \(3,\)"),
        (lambda s, x: x.float(), "float64"),
        (lambda s, x: x.numpy(), "a tensor"),
        (lambda s, x: (x, x), "a tensor"),
    ],
)
def test_field_returning_the_wrong_shape_type_or_dtype(field, fragment: str, method: str) -> None:
    with pytest.raises(FlowfieldsError, match=rf"v\(t, x\): .*{fragment}"):
        odeint(field, torch.ones(3, dtype=F64), [0.0, 1.0], method=method, step_size=0.1)


def test_tuple_state_field_returning_a_tensor_is_refused() -> None:
    with pytest.raises(FlowfieldsError, match="a tuple of 2 tensors"):
        odeint(
            lambda s, st: st[0],
            (torch.ones(2), torch.ones(2)),
            [0.0, 1.0],
            method="rk4",
            step_size=0.1,
        )


def test_complex_states_are_integrated() -> None:
    """Complex states are allowed (quantum master equations): x' = i x, x(1) = e^i."""
    x0 = torch.ones(2, dtype=torch.complex128)
    sol = odeint(lambda s, x: 1j * x, x0, [0.0, 1.0], method="rk4", step_size=0.01)
    torch.testing.assert_close(
        sol.x[-1], x0 * complex(math.cos(1), math.sin(1)), rtol=1e-9, atol=1e-9
    )


def test_sdeint_empty_batch_is_refused() -> None:
    class _SDE:
        noise_type = "diagonal"
        sde_type = "ito"

        def f(self, t, x):
            return -x

        def g(self, t, x):
            return torch.ones_like(x)

    with pytest.raises(FlowfieldsError, match="empty"):
        sdeint(_SDE(), torch.ones(0, 2), [0.0, 1.0])
