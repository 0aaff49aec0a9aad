"""The only code that steps in time: ODE and SDE solvers behind one front door each.

- :func:`odeint` (over torchdiffeq): fixed-step and adaptive, forward or backward in time,
  adjoint gradients, the number of evaluations counted; :data:`SOLVERS` says what each
  method is (order, adaptive, stages).
- :func:`sdeint` (over torchsde) with the same :class:`Solution` record.
"""

from __future__ import annotations

from flowfields.integrate.ode import SOLVERS, Solution, SolverInfo, State, odeint, time_grid
from flowfields.integrate.sde import SDE_METHODS, sdeint

__all__ = [
    "SDE_METHODS",
    "SOLVERS",
    "Solution",
    "SolverInfo",
    "State",
    "odeint",
    "sdeint",
    "time_grid",
]
