"""One front door for solving ODEs: :func:`odeint`, over our stepper and torchdiffeq.

**Who steps a solve** (``Solution.backend`` records it):

- adaptive methods (adaptive_heun, fehlberg2, bosh3, dopri5, dopri8) always run in
  torchdiffeq (``torchdiffeq.odeint``, or ``odeint_adjoint`` when ``adjoint=True``);
- fixed-step methods (euler, midpoint, heun2, heun3, rk4) run in our stepper
  (:func:`flowfields.integrate.stepper.rk_solve`, the same tableaus without torchdiffeq's
  per-step bookkeeping) **unless** ``adjoint=True``, or ``backend="torchdiffeq"``, or a
  torchdiffeq-only fixed-step option (``interp``, ``perturb``) is passed: then in torchdiffeq,
  on the same grid. ``backend="native"`` insists on our stepper (refused where it cannot run).

Only our stepper takes a ``retraction`` (manifold ODEs); adaptive methods refuse one: give
them the tangent-projected field ``v(t, x) = proju(x, u(t, x))`` instead and project the
results. Gradients with respect to the time points flow on every path (through the grid of
our stepper, through torchdiffeq otherwise).

Every requested output time is a solver step, not an interpolant: adaptive methods are told
to step onto them (torchdiffeq's ``step_t`` option, less any times the caller passes as
discontinuities in ``jump_t``, which are stepped onto as well), and fixed-step methods hit
them exactly: each interval ``[t_i, t_{i+1}]`` is split into
``ceil(|t_{i+1} - t_i| / step_size)`` equal steps (:func:`~flowfields.integrate.time_grid`),
so the NFE of a fixed-step solve is ``steps * SOLVERS[method].stages``.

Input is validated (unknown methods, a missing step size, non-monotone or non-finite times,
non-finite or empty states, a field returning the wrong type, shape or dtype), and solver
failures become one :class:`~flowfields.errors.FlowfieldsError` saying what happened, at
which t, and what to try: the field returning NaN/Inf under an adaptive method, the step
size underflowing, ``max_num_steps`` exceeded. Time grids and solver coefficients stay in
float64 while the state keeps its own dtype, and the evaluations of the field actually made
are counted (NFE), including the adjoint's backward solve.

Example:
    >>> import torch
    >>> from flowfields.integrate import ODEOptions, odeint
    >>> sol = odeint(lambda t, x: -x, torch.ones(3), torch.tensor([0.0, 1.0]), method="rk4",
    ...              step_size=0.1)
    >>> sol.nfe, sol.backend
    (40, 'native')
    >>> x_0 = torch.ones(3, dtype=torch.float64)
    >>> sol = odeint(lambda t, x: -x, x_0, [0.0, 1.0], ODEOptions(rtol=1e-8, atol=1e-8))
    >>> round(float(sol.x[-1, 0]), 6), sol.backend
    (0.367879, 'torchdiffeq')
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torchdiffeq
from torch import Tensor, nn

from flowfields.errors import FlowfieldsError, check, check_finite, describe
from flowfields.integrate.grid import (
    as_times,
    describe_times,
    grid_dtype,
    output_indices,
    step_counts,
    time_grid,
)
from flowfields.integrate.options import (
    SOLVERS,
    TORCHDIFFEQ_FIXED_ONLY,
    ODEOptions,
    SolverInfo,
)
from flowfields.integrate.stepper import TABLEAUS, Retraction, State, StepCallbacks, rk_solve

__all__ = ["SOLVERS", "Solution", "SolverInfo", "State", "odeint"]

_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")
_ADJOINT_CALLBACKS = tuple(name + "_adjoint" for name in _CALLBACKS)


class _Counter:
    """Shared NFE tally of one solve: forward evaluations, then the adjoint's backward ones."""

    __slots__ = ("backward", "forward", "phase")

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0
        self.phase = "forward"


class _Watch:
    """Counts evaluations and checks the field's first output; with ``track``, remembers the
    last evaluations' times and whether their outputs were finite (0-d tensors, no host
    sync) to say where a failed solve went wrong."""

    __slots__ = ("checked", "counter", "history", "last_t", "parts", "tuple_state")

    def __init__(
        self, counter: _Counter, tuple_state: bool, parts: tuple[Tensor, ...], track: bool = False
    ) -> None:
        self.counter = counter
        self.tuple_state = tuple_state
        self.parts = parts
        self.checked = False
        self.last_t: Any = None
        self.history: deque[tuple[Tensor, Tensor]] | None = deque(maxlen=64) if track else None

    def __call__(self, t: Tensor, x: Any, out: Any) -> None:
        c = self.counter
        if c.phase == "forward":
            c.forward += 1
        else:
            c.backward += 1
        self.last_t = t
        if not self.checked:
            self.checked = True
            if c.phase == "forward":
                self._check(t, out)
        if self.history is not None:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            finite = torch.stack([torch.isfinite(o).all() for o in outs])
            self.history.append((t.detach(), finite.all()))

    def _check(self, t: Tensor, out: Any) -> None:
        parts = self.parts
        if self.tuple_state:
            ok = isinstance(out, (tuple, list)) and len(out) == len(parts)
            got = out if ok else [out]
        else:
            ok = isinstance(out, Tensor)
            got = [out]
        ok = ok and all(
            isinstance(o, Tensor) and o.shape == p.shape and o.dtype == p.dtype
            for o, p in zip(got, parts)
        )
        if not ok:
            want = ", ".join(f"shape {tuple(p.shape)} dtype {p.dtype}" for p in parts)
            given = (
                describe(out)
                if not isinstance(out, (tuple, list))
                else describe(tuple(describe(o) for o in out))
            )
            kind = f"a tuple of {len(parts)} tensors" if self.tuple_state else "a tensor"
            raise FlowfieldsError(
                f"v(t, x): got {given} at t = {describe_times(t)}, expected {kind} like the "
                f"state ({want})."
            )

    def nonfinite_times(self, reverse: bool) -> tuple[float, float | None] | None:
        """``(first t with a NaN/Inf output, last t with a finite one)`` in the direction of
        integration, among the remembered evaluations; None if all were finite."""
        if not self.history:
            return None
        times = [float(t) for t, _ in self.history]
        ok = [bool(f) for _, f in self.history]
        bad = [s for s, good in zip(times, ok) if not good]
        if not bad:
            return None
        good_t = [s for s, good in zip(times, ok) if good]
        pick = max if reverse else min
        last = max if not reverse else min
        return pick(bad), (last(good_t) if good_t else None)


class _Counted(nn.Module):
    """Wraps ``v`` for torchdiffeq: counts and checks calls; an nn.Module so the adjoint finds
    the parameters; forwards the field's callbacks (with ``dt`` signed in true time)."""

    v: Callable[..., Any]
    watch: _Watch

    def __init__(self, v: Callable[..., Any], watch: _Watch, reverse: bool, fixed: bool) -> None:
        super().__init__()
        # Registering v as a submodule (when it is one) lets torchdiffeq find its parameters.
        if isinstance(v, nn.Module):
            self.v = v
        else:
            object.__setattr__(self, "v", v)
        object.__setattr__(self, "watch", watch)
        for name in _CALLBACKS + _ADJOINT_CALLBACKS:
            if fixed and name.startswith("callback_reject_step"):
                continue  # a fixed step is never rejected (torchdiffeq would warn)
            fn = getattr(v, name, None)
            if callable(fn):
                object.__setattr__(self, name, _signed_dt(fn) if reverse else fn)

    def forward(self, t: Tensor, x: State) -> State:
        out = self.v(t, x)
        self.watch(t, x, out)
        return out


def _signed_dt(fn: Callable[..., Any]) -> Callable[..., Any]:
    """torchdiffeq integrates decreasing times as increasing ``-t``: report ``dt`` signed."""

    def call(t0: Tensor, y0: Any, dt: Tensor) -> Any:
        return fn(t0, y0, -dt)

    return call


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
        backend: who stepped the solve: ``"native"`` (our stepper), ``"torchdiffeq"`` or
            ``"torchsde"``.
    """

    t: Tensor
    x: State
    nfe: int
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    backend: str = ""
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
        check(p.numel() > 0, name, p, "a non-empty state (an empty batch has nothing to solve)")
        check_finite(p, name)
        dtypes.add(p.dtype)
    if len(dtypes) > 1:
        raise FlowfieldsError(
            f"x_0: got a tuple with dtypes {sorted(str(d) for d in dtypes)}, expected one dtype "
            "shared by all parts of the state."
        )
    return is_tuple, parts


def _resolve(
    solver: ODEOptions | None, options: Mapping[str, Any] | None, **given: Any
) -> ODEOptions:
    """``solver`` (default :class:`ODEOptions`) with the keyword arguments given applied."""
    check(
        solver is None or isinstance(solver, ODEOptions),
        "solver",
        solver,
        "an ODEOptions record (or None)",
    )
    base = solver if solver is not None else ODEOptions()
    changes = {k: v for k, v in given.items() if v is not None}
    if options is not None:
        check(isinstance(options, Mapping), "options", options, "a dict of torchdiffeq options")
        changes["options"] = {**base.options, **options}
    if changes.get("method") not in (None, base.method) and "options" not in changes:
        changes["options"] = {}  # the record's options belonged to its own method
    return base.replace(**changes) if changes else base


def _backend(opts: ODEOptions, retraction: Retraction | None, v: Any) -> str:
    """Who steps this solve (the rule in the module docs)."""
    info = opts.info
    if info.adaptive:
        check(
            retraction is None,
            "retraction",
            retraction,
            f"None for the adaptive method {opts.method!r}",
            hint="Adaptive methods do not retract: pass the tangent-projected field "
            "v(t, x) = proju(x, u(t, x)) and project the outputs, or use a fixed-step method "
            "(euler, midpoint, heun2, heun3, rk4).",
        )
        return "torchdiffeq"
    wants_tdq = bool(TORCHDIFFEQ_FIXED_ONLY & set(opts.options))
    if opts.backend == "native":
        check(
            not wants_tdq,
            "options",
            opts.options,
            "no torchdiffeq-only option (interp, perturb) with backend='native'",
        )
        return "native"
    if opts.backend == "torchdiffeq" or opts.adjoint or wants_tdq:
        why = "adjoint=True" if opts.adjoint else "the torchdiffeq backend"
        check(
            retraction is None,
            "retraction",
            retraction,
            f"None with {why} (only our fixed-step stepper retracts)",
            hint="Drop adjoint / backend='torchdiffeq', or the retraction.",
        )
        check(
            getattr(v, "callback_accept_step", None) is None,
            "v.callback_accept_step",
            v,
            f"no callback_accept_step with {why}",
            hint="torchdiffeq's fixed-step solvers call only callback_step (every fixed step "
            "is accepted); our stepper (the default without adjoint) calls both.",
        )
        return "torchdiffeq"
    return "native"


def _fixed_grid(opts: ODEOptions, t: Tensor, t64: Tensor) -> tuple[Tensor, list[int]]:
    """The fixed-step grid on ``t64`` and the grid indices of the requested times."""
    if opts.step_size is not None:
        counts = step_counts(t64, float(opts.step_size))
        grid = time_grid(t64, float(opts.step_size), max_num_steps=opts.max_num_steps)
        return grid, output_indices(counts)
    check(
        t.numel() > 2,
        "step_size",
        opts.step_size,
        f"a positive float for the fixed-step method {opts.method!r}",
        hint="Either pass step_size, or pass the whole time grid as t (more than "
        "two times, one step per interval).",
    )
    check(
        t.numel() - 1 <= opts.max_num_steps,
        "t",
        t,
        f"at most max_num_steps = {opts.max_num_steps:,} intervals (one step each)",
    )
    return t64, list(range(t64.numel()))


def odeint(
    v: Callable[[Tensor, Any], Any],
    x_0: State,
    t: Tensor | Sequence[float],
    solver: ODEOptions | None = None,
    *,
    method: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    step_size: float | None = None,
    adjoint: bool | None = None,
    max_num_steps: int | None = None,
    adjoint_params: Iterable[Tensor] | None = None,
    options: Mapping[str, Any] | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
    retraction: Retraction | None = None,
) -> Solution:
    """Solve ``dx/dt = v(t, x)``, ``x(t[0]) = x_0``, reporting the states at every time of ``t``.

    Args:
        v: the vector field, called as ``v(t, x)`` with ``t`` a 0-d tensor (in the state's
            real dtype) and ``x`` shaped like ``x_0`` (a tuple when ``x_0`` is one); returns a
            tensor (tuple) of the same shape(s) and dtype. torchdiffeq's callbacks
            (``v.callback_step``, ``v.callback_accept_step``, ``v.callback_reject_step`` and
            their ``_adjoint`` versions, each ``(t0, x0, dt)`` with ``dt`` signed) are called.
        x_0: initial state, a non-empty tensor of any shape, or a tuple of tensors of one dtype.
        t: times, shape ``(T,)``, ``T >= 2``, strictly increasing or strictly decreasing
            (integrating backward in time is allowed, e.g. ``[1.0, 0.0]``). Converted to
            float64 for the solver; gradients with respect to ``t`` are carried.
        solver: the settings (:class:`ODEOptions`; default ``ODEOptions()``: dopri5 at
            rtol = atol = 1e-5). The keyword arguments ``method``, ``rtol``, ``atol``,
            ``step_size``, ``adjoint``, ``max_num_steps`` override its fields when given;
            ``options`` (torchdiffeq pass-through, :data:`TORCHDIFFEQ_OPTIONS`) is merged into
            its options.
        adjoint_params: tensors the adjoint computes gradients for; by default the parameters
            of ``v`` if it is an ``nn.Module``, else none (gradients still reach ``x_0``).
        adjoint_options: torchdiffeq options of the adjoint's backward solve (default: as
            forward, without ``norm``).
        retraction: ``retraction(x, dx) -> x_next`` applied at every stage and step instead
            of ``x + dx`` (fixed-step methods in our stepper only; see
            :mod:`flowfields.integrate.stepper`).

    Returns:
        :class:`Solution` with ``x`` of shape ``(T, *x_0.shape)`` (tuple for tuple states),
        ``nfe`` (evaluations of ``v`` made) and ``backend``. With ``adjoint=True``,
        ``Solution.nfe_backward`` counts the backward solve's evaluations once it has run.

    Raises:
        FlowfieldsError: invalid settings (see :class:`ODEOptions`); a fixed-step method
            without ``step_size`` and only two times; a grid longer than ``max_num_steps``
            (with the number of steps it implies); bad ``t``; ``x_0`` not floating point, not
            finite or empty; ``v`` returning the wrong type, shape or dtype; a retraction
            where it cannot run; an adaptive solve failing (NaN/Inf from the field, step-size
            underflow, ``max_num_steps`` exceeded) -- each message says at which t.
    """
    check(callable(v), "v", v, "a callable v(t, x)")
    opts = _resolve(
        solver,
        options,
        method=method,
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        adjoint=adjoint,
        max_num_steps=max_num_steps,
    )
    check(retraction is None or callable(retraction), "retraction", retraction, "a callable")
    is_tuple, parts = _check_state(x_0)
    t_user = t
    t = as_times(t)
    device = parts[0].device
    t64 = t.to(device=device, dtype=grid_dtype(device))
    backend = _backend(opts, retraction, v)
    counter = _Counter()
    watch = _Watch(counter, is_tuple, parts, track=backend == "torchdiffeq")
    y0: State = tuple(parts) if is_tuple else parts[0]
    if backend == "native":
        grid, out_index = _fixed_grid(opts, t, t64)
        outs = rk_solve(
            v,
            y0,
            grid,
            out_index,
            TABLEAUS[opts.method],
            retraction=retraction,
            callbacks=StepCallbacks.of(v),
            on_eval=watch,
        )
        x: State
        if is_tuple:
            x = tuple(torch.stack([o[p] for o in outs]) for p in range(len(parts)))
        else:
            x = torch.stack(outs)  # type: ignore[arg-type]
    else:
        x = _torchdiffeq_solve(v, y0, t, t64, opts, watch, adjoint_params, adjoint_options)
        if is_tuple:
            x = tuple(x)
    return Solution(
        t=t_user if isinstance(t_user, Tensor) else t,
        x=x,
        nfe=counter.forward,
        method=opts.method,
        backend=backend,
        _counter=counter,
    )


def _torchdiffeq_options(opts: ODEOptions, t: Tensor, t64: Tensor) -> dict[str, Any]:
    """The options dict torchdiffeq gets: our grid (fixed) or step_t / jump_t (adaptive)."""
    tdq: dict[str, Any] = dict(opts.options)
    if not opts.info.adaptive:
        grid, _ = _fixed_grid(opts, t, t64)
        # torchdiffeq negates decreasing times and the grid constructor with them.
        tdq["grid_constructor"] = _make_grid_constructor(grid)
        return tdq
    tdq["max_num_steps"] = opts.max_num_steps
    if opts.step_size is not None:
        tdq.setdefault("first_step", float(opts.step_size))
    # Step onto every requested time (torchdiffeq otherwise reports low-order interpolants,
    # even at the final time when the last step overshoots it). Times the caller lists in
    # ``jump_t`` are stepped onto anyway, and torchdiffeq refuses a time in both lists.
    # Both become tensors: torchdiffeq negates them for decreasing ``t`` only when they
    # are tensors, and silently ignores a list of times that it did not negate.
    for key in ("step_t", "jump_t"):
        if key in tdq:
            tdq[key] = _as_option_times(tdq[key], key, t64)
    if "step_t" in tdq and "jump_t" in tdq:
        both = tdq["step_t"][torch.isin(tdq["step_t"], tdq["jump_t"])]
        check(
            both.numel() == 0,
            "options['step_t']",
            both.tolist(),
            "no time also listed in options['jump_t'] (a jump is stepped onto anyway)",
        )
    if "step_t" not in tdq:
        step_t = t64.detach()
        if "jump_t" in tdq:
            step_t = step_t[~torch.isin(step_t, tdq["jump_t"])]
        if step_t.numel() > 0:
            tdq["step_t"] = step_t
    return tdq


def _torchdiffeq_solve(
    v: Callable[..., Any],
    y0: State,
    t: Tensor,
    t64: Tensor,
    opts: ODEOptions,
    watch: _Watch,
    adjoint_params: Iterable[Tensor] | None,
    adjoint_options: Mapping[str, Any] | None,
) -> Any:
    tdq_opts = _torchdiffeq_options(opts, t, t64)
    reverse = bool(t64[1] < t64[0])
    func = _Counted(v, watch, reverse, fixed=not opts.info.adaptive)
    kwargs: dict[str, Any] = dict(rtol=opts.rtol, atol=opts.atol, method=opts.method)
    try:
        if not opts.adjoint:
            return torchdiffeq.odeint(func, y0, t64, options=tdq_opts, **kwargs)
        if adjoint_params is None:
            adjoint_params = tuple(v.parameters()) if isinstance(v, nn.Module) else ()
        if adjoint_options is None:
            adj_opts = {k: val for k, val in tdq_opts.items() if k != "norm"}
        else:
            check(
                isinstance(adjoint_options, Mapping), "adjoint_options", adjoint_options, "a dict"
            )
            adj_opts = dict(adjoint_options)
        if not opts.info.adaptive and "grid_constructor" in adj_opts:
            # The backward solve runs interval by interval: re-grid each one alike.
            step = opts.step_size
            if step is None:  # one step per interval of t: the backward solve likewise
                adj_opts.pop("grid_constructor")
            else:
                adj_opts["grid_constructor"] = _make_interval_grid_constructor(float(step))
        x = torchdiffeq.odeint_adjoint(
            func,
            y0,
            t64,
            options=tdq_opts,
            adjoint_options=adj_opts,
            adjoint_params=tuple(adjoint_params),
            **kwargs,
        )
    except AssertionError as err:
        raise _solver_failure(err, watch, opts, reverse) from None
    return _mark_backward(x, watch.counter)


def _solver_failure(
    err: AssertionError, watch: _Watch, opts: ODEOptions, reverse: bool
) -> FlowfieldsError:
    """One FlowfieldsError for torchdiffeq's assertion failures: what, at which t, what to try."""
    msg = str(err)
    msg = msg if len(msg) <= 120 else msg[:117] + "..."
    where = describe_times(watch.last_t) if watch.last_t is not None else "the start"
    head = f"odeint(method={opts.method!r}, rtol={opts.rtol:g}, atol={opts.atol:g})"
    bad = watch.nonfinite_times(reverse)
    if bad is not None:
        first, good = bad
        since = "" if good is None else f" (its last finite value was at t = {good:.6g})"
        return FlowfieldsError(
            f"{head}: the vector field returned NaN or Inf at t = {first:.6g}{since}, so the "
            f"solver could not continue ({msg}). Check the field (and its inputs) for "
            "overflow, division by zero, sqrt or log of negative values near that time."
        )
    if "max_num_steps" in msg:
        return FlowfieldsError(
            f"{head}: took more than max_num_steps = {opts.max_num_steps:,} steps between "
            f"two requested times, last at t = {where}. The problem may be stiff or the "
            "tolerances too tight: loosen rtol/atol, raise max_num_steps, or use a "
            "fixed-step method with a step inside the stability region."
        )
    if "underflow in dt" in msg:
        return FlowfieldsError(
            f"{head}: the step size underflowed to zero at t = {where}. The solution may "
            "blow up there (a finite-time singularity: shorten the time span), the field may "
            "be discontinuous there (list the time in options['jump_t']), or the problem is "
            "too stiff for these tolerances (loosen rtol/atol or use a fixed-step method)."
        )
    if "non-finite" in msg:
        return FlowfieldsError(
            f"{head}: the state became NaN or Inf at t = {where}. The solution may blow up "
            "(finite-time singularity) or the field overflow; shorten the time span or check "
            "the field."
        )
    return FlowfieldsError(f"{head}: torchdiffeq failed at t = {where}: {msg}")


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


def _make_grid_constructor(grid: Tensor) -> Callable[..., Tensor]:
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
    def forward(ctx: Any, counter: _Counter, *xs: Tensor) -> tuple[Tensor, ...]:
        ctx.counter = counter
        return tuple(x.view_as(x) for x in xs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Any, ...]:
        ctx.counter.phase = "backward"
        return (None, *grads)


def _mark_backward(x: Any, counter: _Counter) -> Any:
    """Mark the switch to the backward phase: this identity's backward runs before the
    adjoint's."""
    if isinstance(x, tuple):
        if any(xi.requires_grad for xi in x):
            return _BackwardPhase.apply(counter, *x)
        return x
    if x.requires_grad:
        return _BackwardPhase.apply(counter, x)[0]
    return x
