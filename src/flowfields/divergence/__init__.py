"""Divergence of vector fields and the augmented (x, log p) dynamics of CNFs.

- :func:`divergence_exact`: exact, through batched Jacobian products (torch.func).
- :func:`divergence_hutchinson` with :func:`sample_probe`: Hutchinson's unbiased estimate.
- :func:`divergence_hutchpp` with :func:`sample_hutchpp_probes`: Hutch++ (lower variance).
- :class:`AugmentedDynamics`: ``(t, (x, log_p)) -> (v, -div v)`` for
  :func:`flowfields.integrate.odeint`.
"""

from __future__ import annotations

from flowfields.divergence.augmented import ESTIMATORS, AugmentedDynamics
from flowfields.divergence.estimators import (
    DIVERGENCE_MODES,
    PROBE_KINDS,
    divergence_exact,
    divergence_hutchinson,
    divergence_hutchpp,
    sample_hutchpp_probes,
    sample_probe,
)

__all__ = [
    "DIVERGENCE_MODES",
    "ESTIMATORS",
    "PROBE_KINDS",
    "AugmentedDynamics",
    "divergence_exact",
    "divergence_hutchinson",
    "divergence_hutchpp",
    "sample_hutchpp_probes",
    "sample_probe",
]
