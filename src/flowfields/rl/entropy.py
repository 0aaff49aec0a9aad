"""Entropy estimates of latent-variable policies and aggregation over latent particles.

Zhang, Courville, Bengio, Zheng, Zhang, Chen, "Latent State Marginalization as a Low-cost
Approach for Improving Exploration" (ICLR 2023, arXiv:2210.00999), Section 3. For a policy
``pi(a|x) = ∫ pi(a|s) q(s|x) ds``, draw ``s^0 ~ q``, act ``a ~ pi(.|s^0)``, draw ``s^1..s^K ~ q``;
then

    H_K = -log( (1/(K+1)) sum_{k=0..K} pi(a | s^k) )

is a lower bound of the entropy ``H[pi(.|x)]`` in expectation, non-decreasing in ``K`` and exact
as ``K -> inf``. The naive variational estimate ``-log pi(a|s^0) - log q(s^0|x)`` (the joint
entropy ``H[a, s]``) is an upper bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowfields.errors import check

__all__ = ["AGGREGATIONS", "aggregate", "joint_entropy_estimate", "marginal_entropy_estimate"]

#: Ways to aggregate a critic over latent particles (dimension 0), in increasing order.
AGGREGATIONS = ("min", "mean", "logmeanexp")


def marginal_entropy_estimate(log_probs: Tensor) -> Tensor:
    """SMAC's lower bound ``H_K`` of the policy entropy (arXiv:2210.00999, eq. 6).

    Args:
        log_probs: (K+1, batch) with ``log_probs[k] = log pi(a | s^k)``; ``k = 0`` is the latent
            that produced ``a``, ``k >= 1`` are fresh draws from ``q(s|x)``. ``K >= 0``.

    Returns:
        (batch,) ``-(logsumexp_k log_probs - log(K+1))``.

    Raises:
        FlowfieldsError: not a 2-D floating tensor with at least one row.

    Example:
        >>> lp = torch.tensor([[-1.0], [-1.0]])     # two latents, the same density
        >>> marginal_entropy_estimate(lp)
        tensor([1.])
    """
    check(
        isinstance(log_probs, Tensor) and log_probs.ndim == 2 and log_probs.is_floating_point(),
        "log_probs",
        log_probs,
        "a floating tensor of shape (K+1, batch)",
    )
    check(log_probs.shape[0] >= 1, "log_probs", log_probs, "at least one latent row (K >= 0)")
    return -(torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0]))


def joint_entropy_estimate(log_prob_a: Tensor, log_q_s: Tensor) -> Tensor:
    """The naive variational estimate ``-log pi(a|s^0) - log q(s^0|x)`` (an upper bound).

    Its expectation is the joint entropy ``H[a, s] = H[a] + H[s|a] >= H[a]``; maximising it is
    what makes naive latent-policy entropy regularisation blow up (arXiv:2210.00999, Sec. 3).

    Args:
        log_prob_a: (batch,) ``log pi(a | s^0)``.
        log_q_s: (batch,) ``log q(s^0 | x)``.

    Returns:
        (batch,) the estimate.
    """
    check(isinstance(log_prob_a, Tensor), "log_prob_a", log_prob_a, "a tensor of shape (batch,)")
    check(
        isinstance(log_q_s, Tensor) and log_q_s.shape == log_prob_a.shape,
        "log_q_s",
        log_q_s,
        f"a tensor of the shape of log_prob_a {tuple(log_prob_a.shape)}",
    )
    return -(log_prob_a + log_q_s)


def aggregate(values: Tensor, how: str) -> Tensor:
    """Aggregate critic values over latent particles (dimension 0).

    ``min <= mean <= logmeanexp <= max`` elementwise (Jensen for the last two).

    Args:
        values: (K+1, ...) values ``Q(x, s^k, a)``.
        how: one of :data:`AGGREGATIONS`.

    Returns:
        (...) the aggregate.
    """
    check(how in AGGREGATIONS, "how", how, f"one of {AGGREGATIONS}")
    check(
        isinstance(values, Tensor) and values.ndim >= 1 and values.shape[0] >= 1,
        "values",
        values,
        "a tensor of shape (K+1, ...)",
    )
    if how == "min":
        return values.min(dim=0).values
    if how == "mean":
        return values.mean(dim=0)
    return torch.logsumexp(values, dim=0) - math.log(values.shape[0])
