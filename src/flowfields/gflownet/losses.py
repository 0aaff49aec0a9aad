"""Balance objectives: TB, DB, SubTB(lambda), ZVar through one residual, and flow matching.

Write ``C_t = sum_{u < t} (log P_F(s_{u+1} | s_u) - log P_B(s_u | s_{u+1}))`` along a
trajectory (the exit step counts with ``log P_B = 0``) and ``log F_t`` for the flow of the
``t``-th state, with ``log F_{n+1} = log R(x)`` (the flow into ``s_f`` through ``x``). The
sub-trajectory residual from position ``i`` to ``j`` is

    delta(i, j) = log F_i + C_j - C_i - log F_j,

and every balance objective is a mean of its squares over some pairs (Zhang et al.,
arXiv:2209.02606, sec. 2; Madan et al. 2023 for SubTB(lambda)):

- TB: the pair ``(0, n + 1)`` with ``log F_0 = log Z``;
- ZVar: the same pair with ``log F_0`` the batch mean of ``log R(x) - C_{n+1}`` (the
  variance of the per-trajectory log-partition estimates; no ``log Z`` to learn);
- DB: every pair ``(t, t + 1)`` with learned flows;
- SubTB(lambda): every pair ``i < j``, weights ``lambda^(j - i)`` normalised per trajectory.

Flow matching (FM) balances, at every visited non-initial state, the log in-flow over all
parents against the log out-flow over all children plus the exit, with edge flows
``F(s -> s') = exp(pf_logits(s)[a])``, and the exit edge of each ``x`` against ``R(x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.gflownet.env import DAGEnv
from flowfields.gflownet.policy import Policy
from flowfields.gflownet.trajectories import Trajectories, TrajectoryTerms, evaluate

__all__ = [
    "LOSSES",
    "balance_residual",
    "cumulative",
    "db_loss",
    "fm_loss",
    "gfn_loss",
    "subtb_loss",
    "tb_loss",
    "zvar_loss",
]

#: The objectives :func:`gfn_loss` knows.
LOSSES = ("tb", "db", "subtb", "fm", "zvar")


def cumulative(terms: TrajectoryTerms) -> Tensor:
    """``C_t``, ``(T + 1, B)``: cumulative ``log P_F - log P_B`` with ``C_0 = 0``."""
    d = terms.log_pf - terms.log_pb
    return torch.cat([torch.zeros_like(d[:1]), d.cumsum(0)])


def balance_residual(log_f: Tensor, c: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """``delta(i, j) = log F_i + C_j - C_i - log F_j`` for position indices ``i``, ``j``.

    Shapes: ``log_f``, ``c`` ``(T + 1, B)``; ``i``, ``j`` ``(K, B)`` (or broadcastable) ->
    ``(K, B)``.
    """
    i, j = torch.broadcast_tensors(i, j)
    b = log_f.shape[1]
    i, j = i.expand(-1, b) if i.shape[1] == 1 else i, j.expand(-1, b) if j.shape[1] == 1 else j
    return log_f.gather(0, i) + c.gather(0, j) - c.gather(0, i) - log_f.gather(0, j)


def _endpoints(terms: TrajectoryTerms, start: Tensor) -> tuple[Tensor, Tensor]:
    """``(log F, C)`` with ``log F_0 = start`` and ``log F_{n+1} = log R`` (no state flows)."""
    c = cumulative(terms)
    log_f = torch.zeros_like(c)
    cols = torch.arange(c.shape[1], device=c.device)
    log_f = log_f.index_put((torch.zeros_like(cols), cols), start.expand(c.shape[1]).to(c.dtype))
    log_f = log_f.index_put((terms.lengths, cols), terms.log_reward.to(c.dtype))
    return log_f, c


def _whole(terms: TrajectoryTerms, start: Tensor) -> Tensor:
    log_f, c = _endpoints(terms, start)
    zero = torch.zeros_like(terms.lengths)[None]
    return balance_residual(log_f, c, zero, terms.lengths[None])[0]


def tb_loss(terms: TrajectoryTerms, log_z: Tensor) -> Tensor:
    """Trajectory balance: mean of ``(log Z + log P_F(tau) - log R(x) - log P_B(tau|x))^2``."""
    return _whole(terms, log_z).pow(2).mean()


def zvar_loss(terms: TrajectoryTerms) -> Tensor:
    """Log-partition variance: the batch variance of ``log R(x) + log P_B - log P_F``."""
    zeta = (terms.log_reward - cumulative(terms).gather(0, terms.lengths[None])[0]).detach()
    return _whole(terms, zeta.mean()).pow(2).mean()


def db_loss(terms: TrajectoryTerms) -> Tensor:
    """Detailed balance: mean over all steps of ``delta(t, t + 1)^2`` (learned flows)."""
    check(terms.log_f is not None, "terms", terms, "terms evaluated with flows=True")
    assert terms.log_f is not None
    c = cumulative(terms)
    t_len = terms.log_pf.shape[0]
    i = torch.arange(t_len, device=c.device)[:, None]
    delta = balance_residual(terms.log_f, c, i, i + 1)
    valid = i < terms.lengths[None, :]
    return (delta.pow(2) * valid).sum() / valid.sum()


def subtb_loss(terms: TrajectoryTerms, lam: float = 0.9) -> Tensor:
    """SubTB(lambda): all sub-trajectories, weights ``lam^(j - i)`` normalised per trajectory."""
    check(terms.log_f is not None, "terms", terms, "terms evaluated with flows=True")
    check(lam > 0, "lam", lam, "a float > 0")
    assert terms.log_f is not None
    c, log_f = cumulative(terms), terms.log_f
    n1 = c.shape[0]
    pos = torch.arange(n1, device=c.device)
    i, j = pos[:, None], pos[None, :]
    # (n1, n1, B) residuals of every pair, kept where i < j <= n + 1
    delta = (log_f[:, None] - c[:, None]) + (c[None, :] - log_f[None, :])
    valid = (i < j)[..., None] & (j[..., None] <= terms.lengths[None, None, :])
    w = (lam ** (j - i).to(c.dtype)).clamp(min=0)[..., None] * valid
    per_traj = (w * delta.pow(2)).sum((0, 1)) / w.sum((0, 1))
    return per_traj.mean()


def fm_loss(env: DAGEnv, policy: Policy, traj: Trajectories) -> Tensor:
    """Flow matching on the states of ``traj`` (edge flows from ``policy.pf_logits``).

    Mean over visited non-initial states of ``(log in-flow - log out-flow)^2``, the out-flow
    over every allowed forward action (the exit edge included), plus the mean over ``x`` of
    ``(log F(x -> s_f) - log R(x))^2``.
    """
    valid = traj.actions >= 0
    ti, bi = valid.nonzero(as_tuple=True)
    here = traj.states[ti, bi]
    keep = ~env.is_initial(here)
    s = here[keep]
    logits = policy.pf_logits(s)
    log_out = logits.masked_fill(~env.forward_mask(s), float("-inf")).logsumexp(1)
    back = env.backward_mask(s)
    k, b = back.nonzero(as_tuple=True)
    parents, fa = env._backward_step(s[k], b)
    edge = policy.pf_logits(parents).gather(1, fa[:, None])[:, 0]
    # log in-flow per state: a logsumexp over its parents' edges, one column per parent
    log_in = torch.full(back.shape, float("-inf"), dtype=edge.dtype, device=edge.device)
    log_in = log_in.index_put((k, b), edge).logsumexp(1)
    inner = (log_in - log_out).pow(2)
    x_logits = policy.pf_logits(traj.x)[:, env.exit_action]
    reward = (x_logits - traj.log_reward.to(x_logits.dtype)).pow(2)
    return inner.mean() + reward.mean() if inner.numel() else reward.mean()


def gfn_loss(
    name: str, policy: Policy, traj: Trajectories, *, lam: float = 0.9
) -> tuple[Tensor, TrajectoryTerms | None]:
    """The objective ``name`` (one of :data:`LOSSES`) on ``traj`` and the evaluated terms.

    Example:
        >>> from flowfields.gflownet import HyperGrid, optimal_policy, sample_forward
        >>> env = HyperGrid(2, 4)
        >>> exact = optimal_policy(env)  # every balance condition holds
        >>> traj = sample_forward(env, exact, 16, generator=torch.Generator().manual_seed(0))
        >>> [float(gfn_loss(name, exact, traj)[0]) < 1e-20 for name in LOSSES]
        [True, True, True, True, True]
    """
    check(name in LOSSES, "loss", name, f"one of {LOSSES}")
    if name == "fm":
        return fm_loss(policy.env, policy, traj), None
    terms = evaluate(policy, traj, flows=name in ("db", "subtb"))
    if name == "tb":
        return tb_loss(terms, policy.log_z), terms
    if name == "zvar":
        return zvar_loss(terms), terms
    if name == "db":
        return db_loss(terms), terms
    return subtb_loss(terms, lam), terms
