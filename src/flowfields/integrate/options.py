"""Solver settings: the one record (:class:`ODEOptions`) every model that integrates takes.

A model that solves ODEs (a CNF, a neural ODE, a manifold flow) holds one ``ODEOptions`` and
passes it to :func:`flowfields.integrate.odeint`; a call that wants other settings passes
another record (``cnf.log_prob(x, solver=ODEOptions(method="rk4", step_size=0.05))``), or
changes one field with :meth:`ODEOptions.replace`. Invalid settings fail when the record is
built, with a :class:`~flowfields.errors.FlowfieldsError` naming the field.

:data:`SOLVERS` says what each method is; :data:`TORCHDIFFEQ_OPTIONS` lists the torchdiffeq
options that may be passed through unchanged (anything else is refused).

Example:
    >>> from flowfields.integrate import ODEOptions
    >>> opts = ODEOptions(method="rk4", step_size=0.1)
    >>> opts.replace(step_size=0.05).step_size
    0.05
    >>> ODEOptions(rtol=0.0, atol=1e-8).rtol    # a pure absolute tolerance is valid
    0.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowfields.errors import FlowfieldsError, check

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_NUM_STEPS",
    "SOLVERS",
    "TORCHDIFFEQ_FIXED_ONLY",
    "TORCHDIFFEQ_OPTIONS",
    "ODEOptions",
    "SolverInfo",
    "check_torchdiffeq_options",
]


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


#: The solvers :func:`~flowfields.integrate.odeint` offers, by name.
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

#: Who steps a solve: ``"auto"`` (our stepper for fixed-step methods unless torchdiffeq is
#: needed, see :func:`~flowfields.integrate.odeint`), ``"native"`` (always ours; refused where
#: it cannot run) or ``"torchdiffeq"`` (always torchdiffeq's).
BACKENDS = ("auto", "native", "torchdiffeq")

#: Default cap on solver steps (see :attr:`ODEOptions.max_num_steps`).
DEFAULT_MAX_NUM_STEPS = 1_000_000

#: torchdiffeq options passed through unchanged, with the methods they apply to. Every other
#: key is refused (``step_size``, ``grid_constructor`` and ``max_num_steps`` are set from
#: :class:`ODEOptions`, never through this dict).
TORCHDIFFEQ_OPTIONS: dict[str, str] = {
    "step_t": "adaptive: times to step onto (default: every requested output time)",
    "jump_t": "adaptive: discontinuities of the field; stepped onto, the step restarts there",
    "first_step": "adaptive: the first step size (default: torchdiffeq's estimate)",
    "safety": "adaptive: step-size safety factor (torchdiffeq default 0.9)",
    "ifactor": "adaptive: largest step growth per step (default 10)",
    "dfactor": "adaptive: largest step shrink per step (default 0.2)",
    "norm": "adaptive: the error norm, a callable on the state",
    "interp": "fixed-step, torchdiffeq only: output interpolation 'linear' or 'cubic'",
    "perturb": "fixed-step, torchdiffeq only: evaluate stage times one ulp inside the step",
}
_ADAPTIVE_ONLY = {"step_t", "jump_t", "first_step", "safety", "ifactor", "dfactor", "norm"}
#: Keys whose presence routes a fixed-step solve to torchdiffeq (our stepper has no use for
#: them: every output time is a step and stage times are exact).
TORCHDIFFEQ_FIXED_ONLY = frozenset({"interp", "perturb"})


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_torchdiffeq_options(options: Mapping[str, Any] | None, method: str) -> dict[str, Any]:
    """Validate a dict of torchdiffeq pass-through options for ``method``; return a copy.

    Raises:
        FlowfieldsError: a key not in :data:`TORCHDIFFEQ_OPTIONS`, or one that does not apply
            to ``method`` (e.g. ``step_t`` with a fixed-step method).
    """
    if options is None:
        return {}
    check(isinstance(options, Mapping), "options", options, "a dict of torchdiffeq options")
    out = dict(options)
    adaptive = SOLVERS[method].adaptive
    for key in out:
        if key not in TORCHDIFFEQ_OPTIONS:
            hint = ""
            if key in ("step_size", "max_num_steps"):
                hint = f" Set {key} on ODEOptions / as odeint({key}=...) instead."
            elif key == "grid_constructor":
                hint = " The fixed-step grid is built by odeint from t and step_size."
            raise FlowfieldsError(
                f"options[{key!r}]: got an unknown torchdiffeq option, expected one of "
                f"{', '.join(TORCHDIFFEQ_OPTIONS)}.{hint}"
            )
        if adaptive != (key in _ADAPTIVE_ONLY):
            kind = "adaptive" if key in _ADAPTIVE_ONLY else "fixed-step"
            raise FlowfieldsError(
                f"options[{key!r}]: got it with method {method!r}, expected a {kind} method "
                f"({TORCHDIFFEQ_OPTIONS[key]})."
            )
    return out


@dataclass(frozen=True)
class ODEOptions:
    """Settings of one ODE solve (validated on construction).

    Attributes:
        method: a name from :data:`SOLVERS` (fixed: euler, midpoint, heun2, heun3, rk4;
            adaptive: adaptive_heun, fehlberg2, bosh3, dopri5, dopri8).
        rtol, atol: tolerances of adaptive methods (ignored by fixed-step ones); finite,
            ``>= 0``, not both zero (``rtol=0`` with ``atol > 0`` is a pure absolute
            tolerance).
        step_size: fixed-step methods: the largest step (each interval of the requested times
            is split into equal steps no longer than this); None: one step per interval.
            Adaptive methods: the first step (default: torchdiffeq's estimate).
        adjoint: differentiate by solving the adjoint ODE backward (memory O(1) in the number
            of steps); always torchdiffeq's ``odeint_adjoint``.
        max_num_steps: the most steps a solve may take: for fixed-step methods the total
            over the grid (checked before anything is allocated), for adaptive methods the
            accepted plus rejected steps between two consecutive requested times
            (torchdiffeq's counter). Exceeding it raises FlowfieldsError.
        backend: ``"auto"``, ``"native"`` or ``"torchdiffeq"`` (see :data:`BACKENDS`).
        options: torchdiffeq pass-through options (:data:`TORCHDIFFEQ_OPTIONS`), validated
            against ``method``.
    """

    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    step_size: float | None = None
    adjoint: bool = False
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS
    backend: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(
            isinstance(self.method, str) and self.method in SOLVERS,
            "method",
            self.method,
            f"one of: {', '.join(SOLVERS)}",
        )
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            check(
                _real(value) and math.isfinite(value) and value >= 0,
                name,
                value,
                "a finite float >= 0",
            )
        check(
            self.rtol > 0 or self.atol > 0,
            "rtol/atol",
            (self.rtol, self.atol),
            "at least one positive tolerance",
        )
        if self.step_size is not None:
            check(
                _real(self.step_size) and math.isfinite(self.step_size) and self.step_size > 0,
                "step_size",
                self.step_size,
                "a positive finite float (or None)",
            )
        check(isinstance(self.adjoint, bool), "adjoint", self.adjoint, "True or False")
        check(
            isinstance(self.max_num_steps, int)
            and not isinstance(self.max_num_steps, bool)
            and self.max_num_steps >= 1,
            "max_num_steps",
            self.max_num_steps,
            "an integer >= 1",
        )
        check(self.backend in BACKENDS, "backend", self.backend, f"one of {BACKENDS}")
        if self.backend == "native":
            check(
                not SOLVERS[self.method].adaptive and not self.adjoint,
                "backend",
                self.backend,
                "'auto' or 'torchdiffeq' for adaptive methods and adjoint solves (our stepper "
                "runs fixed-step methods without the adjoint)",
            )
        opts = check_torchdiffeq_options(self.options, self.method)
        object.__setattr__(self, "options", opts)

    @property
    def info(self) -> SolverInfo:
        """The :class:`SolverInfo` of :attr:`method`."""
        return SOLVERS[self.method]

    def replace(self, **changes: Any) -> ODEOptions:
        """A copy with some fields changed (validated again)."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            check(key in names, key, changes[key], f"a field of ODEOptions ({', '.join(names)})")
        return dataclasses.replace(self, **changes)
