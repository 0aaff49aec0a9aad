"""Neural conservation laws: exact continuity through divergence-free fields.

Paper: Richter-Powell, Lipman, Chen, "Neural Conservation Laws: A Divergence-Free Perspective"
(NeurIPS 2022, arXiv:2210.01741). The divergence-free networks themselves live in
:mod:`flowfields.nn.divfree`; this package builds space-time density/flux pairs on them
(:class:`SpaceTimeDivFree`, the positive :class:`PositiveDensityFlux`), the continuity residual
and kinetic energy used by dynamical optimal transport, the Hodge decomposition model (and a
field with a known decomposition to test it), and the Navier–Stokes models of the fluid
experiments (Taylor–Green vortex, momentum residual, NCL and PINN velocity models).
"""

from flowfields.conservation.fluid import (
    METHODS,
    FluidModel,
    PeriodicMLP,
    momentum_residual,
    taylor_green,
    velocity_error,
)
from flowfields.conservation.hodge import HodgeDecomposition, gradient
from flowfields.conservation.known import KnownHodgeField
from flowfields.conservation.potentials import (
    gaussian_log_density,
    gaussian_newtonian_grad,
    regularized_lower_gamma_ratio,
)
from flowfields.conservation.spacetime import (
    MixtureMarginal,
    PositiveDensityFlux,
    SpaceTimeDivFree,
    continuity_residual,
    kinetic_energy,
)

__all__ = [
    "METHODS",
    "FluidModel",
    "HodgeDecomposition",
    "KnownHodgeField",
    "MixtureMarginal",
    "PeriodicMLP",
    "PositiveDensityFlux",
    "SpaceTimeDivFree",
    "continuity_residual",
    "gaussian_log_density",
    "gaussian_newtonian_grad",
    "gradient",
    "kinetic_energy",
    "momentum_residual",
    "regularized_lower_gamma_ratio",
    "taylor_green",
    "velocity_error",
]
