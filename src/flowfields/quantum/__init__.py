"""Differentiable steady states of Lindblad master equations.

Vargas-Hernández, Chen, Jung, Brumer, "Fully differentiable optimization protocols for
non-equilibrium steady states" (arXiv:2103.12604): the steady state of a Lindblad master
equation is differentiated by the implicit function theorem -- one adjoint linear solve, whatever
algorithm found it -- which turns inverse design of open quantum devices into gradient ascent.
"""

from flowfields.quantum.design import AscentResult, Box, GridResult, grid_search, projected_ascent
from flowfields.quantum.liouvillian import (
    Lindbladian,
    as_operator,
    lindbladian,
    liouvillian,
    unvec,
    vec,
)
from flowfields.quantum.models import (
    HeatDevice,
    LightHarvester,
    bose_einstein,
    kerr_cavity,
    light_harvesting,
    qubit_chain,
    transfer_efficiency,
    v_system_heat,
)
from flowfields.quantum.observables import dissipator, expect, heat_current, rectification
from flowfields.quantum.steady import (
    AUTO_DENSE_MAX,
    STEADY_METHODS,
    evolve_default_tol,
    steady_state,
)

__all__ = [
    "AUTO_DENSE_MAX",
    "STEADY_METHODS",
    "AscentResult",
    "Box",
    "GridResult",
    "HeatDevice",
    "LightHarvester",
    "Lindbladian",
    "as_operator",
    "bose_einstein",
    "dissipator",
    "evolve_default_tol",
    "expect",
    "grid_search",
    "heat_current",
    "kerr_cavity",
    "light_harvesting",
    "lindbladian",
    "liouvillian",
    "projected_ascent",
    "qubit_chain",
    "rectification",
    "steady_state",
    "transfer_efficiency",
    "unvec",
    "v_system_heat",
    "vec",
]
