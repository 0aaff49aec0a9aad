"""The only code that steps in time: ODE and SDE solvers behind one front door each.

- :func:`odeint` (our fixed-step stepper and torchdiffeq): fixed-step and adaptive, forward or
  backward in time, adjoint gradients, gradients with respect to the times, a retraction hook
  for manifold ODEs, the number of evaluations counted; :class:`ODEOptions` is the one
  solver-settings record every model that integrates takes; :data:`SOLVERS` says what each
  method is (order, adaptive, stages).
- :func:`sdeint` (over torchsde) with the same :class:`Solution` record.
- :func:`time_grid` (the one fixed-step grid builder, float64) and :func:`as_times`.
- :func:`gauss_legendre` quadrature on an interval.
- Ornstein–Uhlenbeck closed forms (:mod:`flowfields.integrate.ou`): :func:`ou_transition`,
  :func:`ou_stationary`, :func:`ou_bridge`, :func:`ou_variance` and :class:`OUSDE` for sdeint.
"""

from __future__ import annotations

from flowfields.integrate.grid import as_times, time_grid
from flowfields.integrate.ode import Solution, odeint
from flowfields.integrate.options import (
    BACKENDS,
    SOLVERS,
    TORCHDIFFEQ_OPTIONS,
    ODEOptions,
    SolverInfo,
)
from flowfields.integrate.ou import OUSDE, ou_bridge, ou_stationary, ou_transition, ou_variance
from flowfields.integrate.quadrature import QuadratureRule, gauss_legendre
from flowfields.integrate.sde import SDE_METHODS, sdeint
from flowfields.integrate.stepper import TABLEAUS, Retraction, State

__all__ = [
    "BACKENDS",
    "OUSDE",
    "SDE_METHODS",
    "SOLVERS",
    "TABLEAUS",
    "TORCHDIFFEQ_OPTIONS",
    "ODEOptions",
    "QuadratureRule",
    "Retraction",
    "Solution",
    "SolverInfo",
    "State",
    "as_times",
    "gauss_legendre",
    "odeint",
    "ou_bridge",
    "ou_stationary",
    "ou_transition",
    "ou_variance",
    "sdeint",
    "time_grid",
]
