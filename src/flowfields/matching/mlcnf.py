"""Maximum-likelihood CNF training (the FFJORD-style baseline Flow Matching is compared with).

FFJORD (Grathwohl et al., arXiv:1810.01367) trains a CNF by maximising ``log p_1(x)``
computed *through the ODE solve*: every step integrates the augmented dynamics from t = 1 to
t = 0, with a Hutchinson trace estimate (probe fixed over the solve) and gradients by the
adjoint method. This simulation cost per step is what Flow Matching's regression loss avoids;
the ``flow-matching-2d`` experiment measures the difference in wall-clock.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.integrate import ODEOptions
from flowfields.matching.cnf import CNF

__all__ = ["mlcnf_loss"]


def mlcnf_loss(
    model: CNF,
    x_1: Tensor,
    *,
    estimator: str = "hutchinson",
    probe: str = "rademacher",
    solver: ODEOptions | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Negative mean log-likelihood ``-mean log p_1(x_1)`` of a CNF, differentiable.

    Args:
        model: the :class:`CNF` being trained.
        x_1: data batch, shape (B, *event_shape).
        estimator: ``"hutchinson"`` (FFJORD, default) or ``"exact"``.
        probe: Hutchinson probe kind, ``"rademacher"`` or ``"gaussian"`` (one per example,
            held fixed over the solve).
        solver: solver settings; default the model's own (:attr:`CNF.solver`, dopri5 at
            1e-5 unless set, as FFJORD) with ``adjoint=True`` (gradients by the adjoint
            method). Pass ``adjoint=False`` to backpropagate through the solver's operations.
        generator: torch generator for the probe.

    Returns:
        Scalar loss in nats per example.

    Raises:
        FlowfieldsError: if ``model`` is not a CNF, or on bad data / names.
    """
    check(isinstance(model, CNF), "model", model, "a flowfields.matching.CNF")
    if solver is None:
        solver = model.solver.replace(adjoint=True)
    log_p = model.log_prob(
        x_1, estimator=estimator, probe=probe, generator=generator, solver=solver
    )
    return -log_p.mean()
