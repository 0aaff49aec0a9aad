"""Convex potential flows (Huang, Chen, Tsirigotis, Courville, ICLR 2021, arXiv:2012.05942).

- :class:`ConvexPotentialBlock`: ``f = ∇F`` for a strongly convex ICNN potential ``F``;
  exact / SLQ / CG-surrogate log-determinants; inverse by convex optimisation.
- :class:`CPFlow`: blocks stacked with ActNorm, a density model (``log_prob``, ``sample``).
- :class:`ConditionalCPFlow`: PICNN blocks given a context, pushed forward (a VI posterior).
- :func:`gaussian_w2`, :func:`gaussian_brenier_map`: the closed-form quadratic OT between
  Gaussians the transport claims are checked against.

The networks are in :mod:`flowfields.nn` (``ICNN``, ``PICNN``, ``ActNorm``) and the Krylov
methods in :mod:`flowfields.linalg` (``conjugate_gradient``, ``lanczos``, ``slq_logdet``,
``logdet_surrogate``).
"""

from flowfields.cpflow.block import LOGDET_METHODS, ConvexPotentialBlock, InverseResult
from flowfields.cpflow.flow import ConditionalCPFlow, CPFlow, SampleDetails
from flowfields.cpflow.gaussian_ot import (
    TriangularGaussianFlow,
    gaussian_brenier_map,
    gaussian_w2,
    sqrtm_spd,
)

__all__ = [
    "LOGDET_METHODS",
    "CPFlow",
    "ConditionalCPFlow",
    "ConvexPotentialBlock",
    "InverseResult",
    "SampleDetails",
    "TriangularGaussianFlow",
    "gaussian_brenier_map",
    "gaussian_w2",
    "sqrtm_spd",
]
