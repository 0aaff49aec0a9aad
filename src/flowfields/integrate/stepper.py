"""Our explicit Runge–Kutta stepper for fixed-step solves, with a retraction hook.

:func:`rk_solve` steps an explicit Runge–Kutta tableau (the same tableaus torchdiffeq names:
euler, midpoint, heun2, heun3, rk4 = Kutta's 3/8 rule) over a precomputed grid. It is what
:func:`~flowfields.integrate.odeint` runs for fixed-step methods (see there for exactly when),
because it skips torchdiffeq's per-step bookkeeping, and because it has two things torchdiffeq's
fixed-grid solver does not:

- a **retraction** ``retraction(x, dx) -> x_next`` applied at every stage and every step in
  place of ``x + dx`` (stage ``s`` is ``retraction(x, h sum_j a_sj k_j)``, the step
  ``retraction(x, h sum_j b_j k_j)``), so ODEs on manifolds stay on them: e.g.
  ``lambda x, dx: projx(x + dx)`` or ``lambda x, dx: expmap(x, proju(x, dx))``. Without one,
  the update is ``x + h b_1 k_1 + h b_2 k_2 + ...`` added term by term.
- gradients with respect to the time points: when the grid requires grad, step sizes and
  stage times are tensors in the autograd graph (otherwise Python floats, the fast path).

torchdiffeq's callback API is honoured: a field with ``callback_step(t0, x0, dt)`` has it
called before every step and ``callback_accept_step(t0, x0, dt)`` after every step (each
fixed step is accepted; ``callback_reject_step`` is never called), ``t0`` and ``dt`` as 0-d
float64 tensors, ``dt`` signed (negative when integrating backward in time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

__all__ = ["TABLEAUS", "Retraction", "State", "StepCallbacks", "Tableau", "rk_solve"]

#: A state: one tensor, or a tuple of tensors integrated together (e.g. ``(x, log_p)``).
State = Tensor | tuple[Tensor, ...]

#: ``retraction(x, dx) -> x_next``: where an increment ``dx`` from ``x`` lands.
Retraction = Callable[[State, State], State]


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau ``(c, a, b)`` of an explicit Runge–Kutta method."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]


#: The explicit fixed-step methods our stepper runs, by name.
TABLEAUS: dict[str, Tableau] = {
    "euler": Tableau((0.0,), ((),), (1.0,)),
    "midpoint": Tableau((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "heun2": Tableau((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    "heun3": Tableau((0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (0.25, 0.0, 0.75)),
    "rk4": Tableau(
        (0.0, 1 / 3, 2 / 3, 1.0),
        ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        (0.125, 0.375, 0.375, 0.125),
    ),
}


@dataclass(frozen=True)
class StepCallbacks:
    """torchdiffeq-style callbacks of a vector field (None where the field has none)."""

    step: Callable[..., Any] | None = None
    accept: Callable[..., Any] | None = None

    @classmethod
    def of(cls, v: Any) -> StepCallbacks:
        """The ``callback_step`` / ``callback_accept_step`` attributes of ``v``."""
        return cls(getattr(v, "callback_step", None), getattr(v, "callback_accept_step", None))

    def __bool__(self) -> bool:
        return self.step is not None or self.accept is not None


def _scaled_sum(ks: Sequence[State], weights: Sequence[float], h: float | Tensor) -> State | None:
    """``h * sum_j weights[j] * ks[j]`` (zero weights skipped; None if all are zero)."""
    if isinstance(ks[0], tuple):
        parts = [_scaled_sum([k[i] for k in ks], weights, h) for i in range(len(ks[0]))]
        return None if parts[0] is None else tuple(parts)  # type: ignore[arg-type]
    out: Tensor | None = None
    for w, k in zip(weights, ks):
        if w == 0.0:
            continue
        assert isinstance(k, Tensor)
        if isinstance(h, Tensor):
            term = (h * w).to(k.real.dtype) * k
            out = term if out is None else out + term
        else:
            out = torch.mul(k, h * w) if out is None else torch.add(out, k, alpha=h * w)
    return out


def _add_terms(x: State, ks: Sequence[State], weights: Sequence[float], h: float | Tensor) -> State:
    """``x + h w_1 k_1 + h w_2 k_2 + ...`` added term by term (the update without retraction)."""
    if isinstance(x, tuple):
        parts = [_add_terms(xi, [k[i] for k in ks], weights, h) for i, xi in enumerate(x)]
        return tuple(cast(Tensor, p) for p in parts)
    out = x
    for w, k in zip(weights, ks):
        if w == 0.0:
            continue
        assert isinstance(k, Tensor)
        if isinstance(h, Tensor):
            out = out + (h * w).to(out.real.dtype) * k
        else:
            out = torch.add(out, k, alpha=h * w)
    return out


def _update(
    x: State,
    ks: Sequence[State],
    weights: Sequence[float],
    h: float | Tensor,
    retraction: Retraction | None,
) -> State:
    if retraction is None:
        return _add_terms(x, ks, weights, h)
    dx = _scaled_sum(ks, weights, h)
    if dx is None:
        dx = tuple(torch.zeros_like(p) for p in x) if isinstance(x, tuple) else torch.zeros_like(x)
    return retraction(x, dx)


def _stage_times(
    grid: Tensor, c: Sequence[float], dtype: torch.dtype, device: torch.device
) -> tuple[list[float] | None, list[float] | Tensor, list[Tensor]]:
    """``(times, steps, stage_t)``: Python floats (fast path) or tensors (grid requires grad).

    Stage times are formed in float64 and handed to the field as 0-d tensors in the state's
    dtype, all moved to the device in one transfer.
    """
    if grid.requires_grad:
        h = grid[1:] - grid[:-1]
        cs = torch.tensor(c, dtype=grid.dtype, device=grid.device)
        st = (grid[:-1, None] + cs * h[:, None]).reshape(-1).to(device=device, dtype=dtype)
        return None, h, list(st.unbind(0))
    times = grid.detach().cpu().to(torch.float64).tolist()
    steps = [times[i + 1] - times[i] for i in range(len(times) - 1)]
    st = torch.tensor(
        [times[i] + ci * steps[i] for i in range(len(steps)) for ci in c], dtype=torch.float64
    ).to(device=device, dtype=dtype)
    return times, steps, list(st.unbind(0))


def rk_solve(
    v: Callable[[Tensor, Any], Any],
    x_0: State,
    grid: Tensor,
    out_index: Sequence[int],
    tableau: Tableau,
    *,
    retraction: Retraction | None = None,
    callbacks: StepCallbacks | None = None,
    on_eval: Callable[[Tensor, State, State], None] | None = None,
) -> list[State]:
    """Step ``tableau`` over ``grid`` from ``x_0``; return the states at ``grid[out_index]``.

    Args:
        v: the vector field ``v(t, x)``; ``t`` a 0-d tensor in the state's (real) dtype.
        x_0: the state at ``grid[0]``.
        grid: strictly monotone times, shape (N + 1,), float64 (autograd kept if it has one).
        out_index: increasing grid indices to report, starting with 0.
        tableau: the method.
        retraction: ``retraction(x, dx) -> x_next`` used for every stage and step instead of
            ``x + dx`` (see the module docs); None for the plain update.
        callbacks: the field's step callbacks.
        on_eval: called as ``on_eval(t, x, v(t, x))`` after every evaluation (counting and
            checks).

    Returns:
        The states at the requested indices, ``x_0`` first.
    """
    c, a, b = tableau.c, tableau.a, tableau.b
    ref = x_0[0] if isinstance(x_0, tuple) else x_0
    dtype = ref.real.dtype if ref.is_complex() else ref.dtype
    _, steps, stage_t = _stage_times(grid, c, dtype, ref.device)
    callbacks = callbacks or StepCallbacks()
    wanted = set(out_index)
    out = [x_0]
    x = x_0
    n_stages = len(c)
    for i in range(len(stage_t) // n_stages):
        h = steps[i]
        if callbacks.step is not None:
            callbacks.step(grid[i], x, grid[i + 1] - grid[i])
        ks: list[State] = []
        for stage in range(n_stages):
            x_stage = x if stage == 0 else _update(x, ks, a[stage], h, retraction)
            t_stage = stage_t[i * n_stages + stage]
            k = v(t_stage, x_stage)
            if on_eval is not None:
                on_eval(t_stage, x_stage, k)
            ks.append(k)
        x_next = _update(x, ks, b, h, retraction)
        if callbacks.accept is not None:
            callbacks.accept(grid[i], x, grid[i + 1] - grid[i])
        x = x_next
        if i + 1 in wanted:
            out.append(x)
    return out
