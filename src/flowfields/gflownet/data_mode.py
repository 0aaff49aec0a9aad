"""Data mode: a GFlowNet trained from samples ``x`` instead of a reward.

With trajectories drawn backward from data, ``tau ~ P_B(. | x)``,

    log P_T(x) = log E_{P_B(tau|x)} [P_F(tau) / P_B(tau|x)]
              >= E_{P_B(tau|x)} [log P_F(tau) - log P_B(tau|x)] = ELBO(x),

with gap ``KL(P_B(tau|x) || P_F(tau|x))``, ``P_F(tau|x) = P_F(tau) / P_T(x)`` (Zhang et al.,
arXiv:2209.02606, sec. 3): a hierarchical VAE is a GFlowNet with a learned ``P_B`` (the
encoder), a diffusion model one with a fixed ``P_B``, an autoregressive model one on a tree
(``P_B == 1``, ELBO = log-likelihood). With ``K`` trajectories per ``x`` the importance-weighted
bound ``log (1/K) sum_k P_F(tau_k) / P_B(tau_k|x)`` increases with ``K`` toward ``log P_T(x)``.
The trajectory-balance-consistency (TBC) penalty of MLE-GFN is the spread over those ``K``
of ``log P_F(tau_k) - log P_B(tau_k|x)``: zero for every ``x`` exactly when ``P_B`` is the
posterior ``P_F(tau | x)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check, check_shape
from flowfields.gflownet.env import DAGEnv
from flowfields.gflownet.policy import Policy
from flowfields.gflownet.trajectories import evaluate, sample_backward

__all__ = ["DataBounds", "data_bounds", "log_weights", "mle_gfn_loss"]


@dataclass
class DataBounds:
    """Per-datum bounds from ``K`` backward trajectories each.

    Attributes:
        log_w: ``(K, B)`` ``log P_F(tau_k) - log P_B(tau_k | x)``.
        log_pb: ``(K, B)`` ``log P_B(tau_k | x)`` (for score-function gradients of ``P_B``).
        elbo: ``(B,)`` mean of ``log_w`` over ``K``.
        iw_bound: ``(B,)`` ``logsumexp_k log_w - log K``.
        tbc: ``(B,)`` variance over ``K`` of ``log_w`` (0 when ``K = 1``).
    """

    log_w: Tensor
    log_pb: Tensor
    elbo: Tensor
    iw_bound: Tensor
    tbc: Tensor


def log_weights(
    env: DAGEnv, policy: Policy, x: Tensor, k: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``K`` backward trajectories per datum: ``(log_w, log_pb)``, each ``(K, B)``."""
    check(isinstance(k, int) and k >= 1, "k", k, "an integer >= 1")
    check_shape(x, "x", ndim=2, last=env.state_dim)
    b = x.shape[0]
    traj = sample_backward(env, policy, x.repeat(k, 1), generator=generator)
    terms = evaluate(policy, traj)
    log_pf, log_pb = terms.log_pf_total(), terms.log_pb_total()
    return (log_pf - log_pb).reshape(k, b), log_pb.reshape(k, b)


def data_bounds(
    env: DAGEnv, policy: Policy, x: Tensor, k: int = 1, *, generator: torch.Generator | None = None
) -> DataBounds:
    """ELBO, importance-weighted bound and TBC of each datum in ``x`` (``(B, state_dim)``)."""
    log_w, log_pb = log_weights(env, policy, x, k, generator=generator)
    elbo = log_w.mean(0)
    iw = torch.logsumexp(log_w, 0) - math.log(k)
    tbc = log_w.var(0, unbiased=False) if k > 1 else torch.zeros_like(elbo)
    return DataBounds(log_w, log_pb, elbo, iw, tbc)


def mle_gfn_loss(bounds: DataBounds, tbc_weight: float = 1.0) -> Tensor:
    """MLE-GFN objective: ``-ELBO`` (with a score-function term for a learned ``P_B``) plus
    ``tbc_weight`` times the TBC penalty, averaged over the batch.

    Backward trajectories are discrete draws, so the gradient of ``E_{P_B}[log w]`` in the
    parameters of ``P_B`` is ``E[(log w - b) grad log P_B] + E[grad log w]``; the baseline ``b``
    is the leave-one-out mean over the ``K`` draws (plain mean when ``K = 1``).
    """
    check(tbc_weight >= 0, "tbc_weight", tbc_weight, "a float >= 0")
    log_w = bounds.log_w
    k = log_w.shape[0]
    if k > 1:
        baseline = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)
    else:
        baseline = log_w.mean(1, keepdim=True)
    score = ((log_w - baseline).detach() * bounds.log_pb).mean(0)
    loss = -(bounds.elbo + score)
    if tbc_weight > 0 and k > 1:
        loss = loss + tbc_weight * bounds.tbc
    return loss.mean()
