"""One front door for solving ODEs: :func:`odeint` over torchdiffeq.

Adaptive solvers and adjoint solves are torchdiffeq's; plain fixed-step solves (euler,
midpoint, heun2, heun3, rk4) run a short native Runge-Kutta loop with the same tableaus, which
avoids torchdiffeq's per-step bookkeeping (measured in ``benchmarks/bench_matching.py``).

Every solve in flowfields goes through :func:`odeint`. It validates its input (unknown solver
names, a missing step size, non-monotone or non-finite times and states raise
:class:`~flowfields.errors.FlowfieldsError`), keeps time grids and solver coefficients in
float64 while the state keeps its own dtype, and counts the evaluations of the vector field
actually made (NFE), including the adjoint's backward solve when ``adjoint=True``.

Every requested output time is a solver step, not an interpolant: adaptive methods are told
to step onto them (torchdiffeq's ``step_t`` option, less any times the caller passes as
discontinuities in ``jump_t``, which are stepped onto as well), and fixed-step methods hit
them exactly: each interval ``[t_i, t_{i+1}]`` is split into
``ceil(|t_{i+1} - t_i| / step_size)`` equal steps (no interpolation, no ragged last step), so
the NFE of a fixed-step solve is ``steps * SOLVERS[method].stages``.

Example:
    >>> import torch
    >>> from flowfields.integrate import odeint
    >>> sol = odeint(lambda t, x: -x, torch.ones(3), torch.tensor([0.0, 1.0]), method="rk4",
    ...              step_size=0.1)
    >>> sol.nfe
    40
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torchdiffeq
from torch import Tensor, nn

from flowfields.errors import FlowfieldsError, check, check_finite, describe

__all__ = ["SOLVERS", "Solution", "SolverInfo", "State", "odeint", "time_grid"]

#: A state: one tensor, or a tuple of tensors integrated together (e.g. ``(x, log_p)``).
State = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class SolverInfo:
    """What a solver is: its order of accuracy, whether it adapts its step, its cost per step.

    Attributes:
        name: the ``method`` string.
        order: global order of accuracy (error ~ step^order).
        adaptive: True for embedded pairs that pick their steps from ``rtol``/``atol``.
        stages: evaluations of the vector field per step (for fixed-step methods, the exact
            NFE of a solve is ``steps * stages``; adaptive methods also spend evaluations on
            rejected steps and the initial step selection).
    """

    name: str
    order: int
    adaptive: bool
    stages: int


#: The solvers :func:`odeint` offers, by name (the capability table the tests run over).
SOLVERS: dict[str, SolverInfo] = {
    s.name: s
    for s in (
        SolverInfo("euler", order=1, adaptive=False, stages=1),
        SolverInfo("midpoint", order=2, adaptive=False, stages=2),
        SolverInfo("heun2", order=2, adaptive=False, stages=2),
        SolverInfo("heun3", order=3, adaptive=False, stages=3),
        SolverInfo("rk4", order=4, adaptive=False, stages=4),
        SolverInfo("adaptive_heun", order=2, adaptive=True, stages=2),
        SolverInfo("fehlberg2", order=2, adaptive=True, stages=3),
        SolverInfo("bosh3", order=3, adaptive=True, stages=4),
        SolverInfo("dopri5", order=5, adaptive=True, stages=6),
        SolverInfo("dopri8", order=8, adaptive=True, stages=13),
    )
}


# Butcher tableaus (c, a, b) of the explicit fixed-step methods, stepped natively by
# :func:`_fixed_step_solve` (the same methods torchdiffeq names; rk4 is Kutta's 3/8 rule).
_TABLEAUS: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "heun2": ((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    "heun3": ((0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (0.25, 0.0, 0.75)),
    "rk4": (
        (0.0, 1 / 3, 2 / 3, 1.0),
        ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        (0.125, 0.375, 0.375, 0.125),
    ),
}


class _Counter:
    """Shared NFE tally of one solve: forward evaluations, then the adjoint's backward ones."""

    __slots__ = ("backward", "forward", "phase")

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0
        self.phase = "forward"


class _Counted(nn.Module):
    """Wraps ``v`` so that every call is counted; an nn.Module so the adjoint finds params."""

    def __init__(self, v: Callable[..., Any], counter: _Counter) -> None:
        super().__init__()
        # Registering v as a submodule (when it is one) lets torchdiffeq find its parameters.
        if isinstance(v, nn.Module):
            self.v = v
        else:
            object.__setattr__(self, "v", v)
        object.__setattr__(self, "counter", counter)

    def forward(self, t: Tensor, x: State) -> State:
        c = self.counter
        if c.phase == "forward":
            c.forward += 1
        else:
            c.backward += 1
        return self.v(t, x)


@dataclass
class Solution:
    """The result of :func:`odeint` (and :func:`~flowfields.integrate.sdeint`).

    Attributes:
        t: the requested times, shape ``(T,)`` (as given).
        x: states at those times, shape ``(T, *x_0.shape)``; a tuple of such tensors when the
            initial state was a tuple. ``x[0]`` is the initial state, ``x[-1]`` the final one.
        nfe: number of evaluations of the vector field made by the forward solve.
        method: the solver used.
        extra: method-specific results (e.g. ``log_ratio`` from ``sdeint(..., logqp=True)``).
    """

    t: Tensor
    x: State
    nfe: int
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _counter: _Counter | None = field(default=None, repr=False, compare=False)

    @property
    def nfe_backward(self) -> int:
        """Evaluations made so far by the adjoint's backward solve (0 until ``backward()``)."""
        return 0 if self._counter is None else self._counter.backward

    @property
    def x_final(self) -> State:
        """The state at the last requested time, shape ``x_0.shape`` (tuple for tuple states)."""
        if isinstance(self.x, tuple):
            return tuple(xi[-1] for xi in self.x)
        return self.x[-1]


def _valid_methods() -> str:
    return ", ".join(SOLVERS)


def _as_time(t: Any, argument: str = "t") -> Tensor:
    if isinstance(t, (list, tuple)):
        check(
            all(isinstance(s, (int, float)) for s in t),
            argument,
            t,
            "a 1-D tensor or a list of floats",
        )
        t = torch.tensor(t, dtype=torch.float64)
    check(isinstance(t, Tensor), argument, t, "a 1-D tensor of times")
    check(
        t.ndim == 1 and t.numel() >= 2,
        argument,
        t,
        "a 1-D tensor with at least 2 times (start and end)",
    )
    check(t.is_floating_point(), argument, t, "a floating-point tensor of times")
    check(bool(torch.isfinite(t).all()), argument, t, "finite times")
    d = t[1:] - t[:-1]
    check(
        bool((d > 0).all()) or bool((d < 0).all()),
        argument,
        t.tolist() if t.numel() <= 8 else t,
        "strictly increasing or strictly decreasing times",
        hint="Repeated or zigzagging times are not allowed.",
    )
    return t


def time_grid(t: Tensor, step_size: float) -> Tensor:
    """The fixed-step grid used by :func:`odeint`: every time of ``t`` plus equal sub-steps.

    Each interval ``[t_i, t_{i+1}]`` is split into ``n_i = ceil(|t_{i+1} - t_i| / step_size)``
    equal steps (a tiny relative slack absorbs rounding, so 1 / 0.1 gives 10 steps, not 11).

    Args:
        t: strictly monotone times, shape ``(T,)``.
        step_size: the largest step allowed, > 0.

    Returns:
        The grid, float64 on the CPU, shape ``(1 + sum_i n_i,)``, containing ``t`` exactly.
    """
    t64 = t.detach().to(device="cpu", dtype=torch.float64)
    pieces = []
    span = (t64[1:] - t64[:-1]).abs().tolist()
    for i, s in enumerate(span):
        n = max(1, math.ceil(s / step_size * (1.0 - 1e-10)))
        frac = torch.arange(n, dtype=torch.float64) / n
        pieces.append(t64[i] + (t64[i + 1] - t64[i]) * frac)
    pieces.append(t64[-1:])
    return torch.cat(pieces)


def _check_state(x_0: Any) -> tuple[bool, tuple[Tensor, ...]]:
    if isinstance(x_0, Tensor):
        parts: tuple[Tensor, ...] = (x_0,)
        is_tuple = False
    elif isinstance(x_0, (tuple, list)) and len(x_0) > 0:
        parts = tuple(x_0)
        is_tuple = True
    else:
        raise FlowfieldsError(
            f"x_0: got {describe(x_0)}, expected a tensor or a non-empty tuple of tensors."
        )
    dtypes = set()
    for i, p in enumerate(parts):
        name = f"x_0[{i}]" if is_tuple else "x_0"
        check(isinstance(p, Tensor), name, p, "a torch.Tensor")
        check(
            p.is_floating_point() or p.is_complex(),
            name,
            p,
            "a floating-point (or complex) tensor",
            hint="Convert integer data with .float() or .double().",
        )
        check_finite(p, name)
        dtypes.add(p.dtype)
    if len(dtypes) > 1:
        raise FlowfieldsError(
            f"x_0: got a tuple with dtypes {sorted(str(d) for d in dtypes)}, expected one dtype "
            "shared by all parts of the state."
        )
    return is_tuple, parts


def odeint(
    v: Callable[[Tensor, State], State],
    x_0: State,
    t: Tensor | Sequence[float],
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    step_size: float | None = None,
    adjoint: bool = False,
    adjoint_params: Iterable[Tensor] | None = None,
    options: dict[str, Any] | None = None,
    adjoint_options: dict[str, Any] | None = None,
) -> Solution:
    """Solve ``dx/dt = v(t, x)``, ``x(t[0]) = x_0``, reporting the states at every time of ``t``.

    Args:
        v: the vector field, called as ``v(t, x)`` with ``t`` a 0-d tensor (in the state's
            dtype) and ``x`` shaped like ``x_0`` (a tuple when ``x_0`` is one); returns a
            tensor (tuple) of the same shape(s).
        x_0: initial state, a tensor of any shape, or a tuple of tensors of one dtype.
        t: times, shape ``(T,)``, ``T >= 2``, strictly increasing or strictly decreasing
            (integrating backward in time is allowed, e.g. ``[1.0, 0.0]``). Converted to
            float64 for the solver.
        method: one of :data:`SOLVERS` (fixed: euler, midpoint, heun2, heun3, rk4; adaptive:
            adaptive_heun, fehlberg2, bosh3, dopri5, dopri8).
        rtol, atol: tolerances of adaptive methods (ignored by fixed-step ones).
        step_size: largest step of a fixed-step method. If None, a fixed-step method takes one
            step per interval of ``t`` (which then needs more than two times).
        adjoint: differentiate by solving the adjoint ODE backward (memory O(1) in the number
            of steps) instead of backpropagating through the solver.
        adjoint_params: tensors the adjoint computes gradients for; by default the parameters
            of ``v`` if it is an ``nn.Module``, else none (gradients still reach ``x_0``).
        options: extra torchdiffeq solver options (e.g. ``max_num_steps``, ``step_t``).
            Without options and without ``adjoint``, fixed-step methods are stepped natively
            (same tableaus as torchdiffeq, less per-step overhead); with options they go
            through torchdiffeq.
        adjoint_options: torchdiffeq options of the backward solve (default: as forward).

    Returns:
        :class:`Solution` with ``x`` of shape ``(T, *x_0.shape)`` (tuple for tuple states) and
        ``nfe``, the number of evaluations of ``v`` made. With ``adjoint=True``,
        ``Solution.nfe_backward`` counts the backward solve's evaluations once it has run.

    Raises:
        FlowfieldsError: unknown ``method``; fixed-step method without ``step_size`` and only
            two times; ``step_size`` not positive; ``t`` not 1-D, not finite or not strictly
            monotone; ``x_0`` not floating point or not finite.
    """
    check(callable(v), "v", v, "a callable v(t, x)")
    check(
        isinstance(method, str) and method in SOLVERS,
        "method",
        method,
        f"one of: {_valid_methods()}",
    )
    info = SOLVERS[method]
    is_tuple, parts = _check_state(x_0)
    t_user = t
    t = _as_time(t)
    check(
        isinstance(rtol, (int, float)) and rtol > 0 and isinstance(atol, (int, float)) and atol > 0,
        "rtol/atol",
        (rtol, atol),
        "positive floats",
    )
    opts: dict[str, Any] = dict(options or {})
    device = parts[0].device
    # float64 time grids, except on devices without float64 (Apple MPS)
    t64 = t.to(device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
    if not info.adaptive:
        if step_size is not None:
            check(
                isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0,
                "step_size",
                step_size,
                "a positive finite float",
            )
            grid = time_grid(t64, float(step_size))
            # torchdiffeq negates decreasing times and the grid constructor with them.
            opts["grid_constructor"] = _make_grid_constructor(grid, t64)
        else:
            check(
                t.numel() > 2,
                "step_size",
                step_size,
                f"a positive float for the fixed-step method {method!r}",
                hint="Either pass step_size, or pass the whole time grid as t (more than "
                "two times, one step per interval).",
            )
    else:
        if step_size is not None:
            opts.setdefault("first_step", float(step_size))
        # Step onto every requested time (torchdiffeq otherwise reports low-order interpolants,
        # even at the final time when the last step overshoots it). Times the caller lists in
        # ``jump_t`` are stepped onto anyway, and torchdiffeq refuses a time in both lists.
        # Both become tensors: torchdiffeq negates them for decreasing ``t`` only when they
        # are tensors, and silently ignores a list of times that it did not negate.
        for key in ("step_t", "jump_t"):
            if key in opts:
                opts[key] = _as_option_times(opts[key], key, t64)
        if "step_t" in opts and "jump_t" in opts:
            both = opts["step_t"][torch.isin(opts["step_t"], opts["jump_t"])]
            check(
                both.numel() == 0,
                "options['step_t']",
                both.tolist(),
                "no time also listed in options['jump_t'] (a jump is stepped onto anyway)",
            )
        if "step_t" not in opts:
            step_t = t64
            if "jump_t" in opts:
                step_t = t64[~torch.isin(t64, opts["jump_t"])]
            if step_t.numel() > 0:
                opts["step_t"] = step_t

    counter = _Counter()
    y0 = tuple(parts) if is_tuple else parts[0]
    if not info.adaptive and not adjoint and not options:
        # Native stepping: the same tableaus without torchdiffeq's per-step bookkeeping
        # (about 10% faster for small networks; see benchmarks/bench_matching.py).
        grid = time_grid(t64, float(step_size)) if step_size is not None else t64
        x = _fixed_step_solve(v, y0, grid, t64, _TABLEAUS[method], counter)
        return Solution(
            t=t_user if isinstance(t_user, Tensor) else t,
            x=x,
            nfe=counter.forward,
            method=method,
            _counter=counter,
        )
    func = _Counted(v, counter)
    if adjoint:
        if adjoint_params is None:
            adjoint_params = tuple(v.parameters()) if isinstance(v, nn.Module) else ()
        if adjoint_options is None:
            adj_opts = {k: val for k, val in opts.items() if k != "norm"}
        else:
            adj_opts = dict(adjoint_options)
        if not info.adaptive and "grid_constructor" in adj_opts:
            # The backward solve runs interval by interval: re-grid each one alike.
            adj_opts["grid_constructor"] = _make_interval_grid_constructor(float(step_size))
        x = _odeint_adjoint_counted(
            func, y0, t64, rtol, atol, method, opts, adj_opts, tuple(adjoint_params), counter
        )
    else:
        x = torchdiffeq.odeint(func, y0, t64, rtol=rtol, atol=atol, method=method, options=opts)
    if is_tuple:
        x = tuple(x)
    return Solution(
        t=t_user if isinstance(t_user, Tensor) else t,
        x=x,
        nfe=counter.forward,
        method=method,
        _counter=counter,
    )


def _as_option_times(value: Any, key: str, t64: Tensor) -> Tensor:
    """``options[key]`` (``step_t`` or ``jump_t``) as a finite 1-D tensor like ``t64``."""
    try:
        times = torch.as_tensor(value, dtype=t64.dtype, device=t64.device).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise FlowfieldsError(
            f"options[{key!r}]: got {describe(value)}, expected a 1-D tensor or list of times."
        ) from None
    check(bool(torch.isfinite(times).all()), f"options[{key!r}]", value, "finite times")
    return times


def _make_grid_constructor(grid: Tensor, t64: Tensor) -> Callable[..., Tensor]:
    """Grid constructor returning our precomputed grid (torchdiffeq may hand us -t)."""

    def constructor(func: Any, y0: Tensor, t: Tensor) -> Tensor:
        g = grid.to(device=t.device, dtype=t.dtype)
        return g if bool(t[0] == g[0]) else -g

    return constructor


def _make_interval_grid_constructor(step_size: float) -> Callable[..., Tensor]:
    def constructor(func: Any, y0: Tensor, t: Tensor) -> Tensor:
        return time_grid(t, step_size).to(device=t.device, dtype=t.dtype)

    return constructor


class _BackwardPhase(torch.autograd.Function):
    """Identity whose backward switches the counter to 'backward' before the adjoint runs."""

    @staticmethod
    def forward(ctx: Any, counter: _Counter, *xs: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        ctx.counter = counter
        return tuple(x.view_as(x) for x in xs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        ctx.counter.phase = "backward"
        return (None, *grads)


def _odeint_adjoint_counted(
    func: _Counted,
    y0: State,
    t64: Tensor,
    rtol: float,
    atol: float,
    method: str,
    opts: dict[str, Any],
    adj_opts: dict[str, Any],
    adjoint_params: tuple[Tensor, ...],
    counter: _Counter,
) -> State:
    x = torchdiffeq.odeint_adjoint(
        func,
        y0,
        t64,
        rtol=rtol,
        atol=atol,
        method=method,
        options=opts,
        adjoint_options=adj_opts,
        adjoint_params=adjoint_params,
    )
    # Mark the switch to the backward phase: the identity's backward runs before the adjoint's.
    if isinstance(x, tuple):
        if any(xi.requires_grad for xi in x):
            return _BackwardPhase.apply(counter, *x)
        return x
    if x.requires_grad:
        return _BackwardPhase.apply(counter, x)[0]
    return x


def _combine(x: State, ks: list[State], weights: Sequence[float], h: float) -> State:
    """``x + h * sum_j weights[j] * ks[j]`` (skipping zero weights), for tensors or tuples."""
    if isinstance(x, tuple):
        return tuple(
            _combine(xi, [k[i] for k in ks], weights, h)  # type: ignore[index]
            for i, xi in enumerate(x)
        )
    out = x
    for w, k in zip(weights, ks):
        if w != 0.0:
            out = torch.add(out, k, alpha=h * w)
    return out


def _fixed_step_solve(
    v: Callable[[Tensor, State], State],
    x_0: State,
    grid: Tensor,
    t_out: Tensor,
    tableau: tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]],
    counter: _Counter,
) -> State:
    """Explicit Runge-Kutta on ``grid`` (float64), returning the states at the times ``t_out``.

    ``grid`` contains every time of ``t_out`` (see :func:`time_grid`); stage times are formed
    in float64 and handed to ``v`` as 0-d tensors in the state's dtype.
    """
    c, a, b = tableau
    ref = x_0[0] if isinstance(x_0, tuple) else x_0
    dtype = ref.real.dtype if ref.is_complex() else ref.dtype
    device = ref.device
    times = grid.tolist()
    wanted = t_out.tolist()
    n_stages = len(c)
    # All stage times at once, formed in float64 and moved in one transfer (no per-stage
    # host-to-device copies on GPUs); each is handed to v as a 0-d tensor.
    stage_times = torch.tensor(
        [times[i] + ci * (times[i + 1] - times[i]) for i in range(len(times) - 1) for ci in c],
        dtype=torch.float64,
    ).to(device=device, dtype=dtype)
    stage_t = stage_times.unbind(0)
    out = [x_0]
    j = 1
    x = x_0
    for i in range(len(times) - 1):
        h = times[i + 1] - times[i]
        ks: list[State] = []
        for stage in range(n_stages):
            x_stage = x if stage == 0 else _combine(x, ks, a[stage], h)
            counter.forward += 1
            ks.append(v(stage_t[i * n_stages + stage], x_stage))
        x = _combine(x, ks, b, h)
        if j < len(wanted) and times[i + 1] == wanted[j]:
            out.append(x)
            j += 1
    if isinstance(x_0, tuple):
        return tuple(torch.stack([o[p] for o in out]) for p in range(len(x_0)))  # type: ignore[index]
    return torch.stack(out)  # type: ignore[arg-type]
