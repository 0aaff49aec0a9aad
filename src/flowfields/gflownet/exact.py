"""Exact quantities on an enumerable DAG: ``P_T`` by dynamic programming, exact optimal
policies, and every complete trajectory (small DAGs only).

``exact_terminal_distribution(env, policy)`` pushes the probability of being at each state
forward level by level: ``p(s0) = 1``, ``p(s') = sum_s p(s) P_F(s' | s)`` and
``P_T(x) = p(x) P_F(exit | x)``. :func:`optimal_policy` builds, for a chosen ``P_B``, the
unique flows that satisfy every balance condition: ``F(s) = R(s) + sum_{s'} F(s') P_B(s | s')``
(backwards over levels), ``P_F(s' | s) = F(s') P_B(s | s') / F(s)``,
``P_F(exit | s) = R(s) / F(s)`` and ``Z = F(s0)`` (Zhang et al., arXiv:2209.02606, sec. 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check
from flowfields.gflownet.env import DAGEnv
from flowfields.gflownet.policy import Policy, TabularPolicy
from flowfields.gflownet.trajectories import Trajectories, evaluate

__all__ = [
    "DAGTable",
    "all_trajectories",
    "dag_table",
    "exact_data_bounds",
    "exact_terminal_distribution",
    "l1_error",
    "optimal_policy",
    "posterior_log_pb",
    "target_distribution",
    "terminal_distribution_from_log_pf",
]


@dataclass
class DAGTable:
    """Every state and edge of an enumerable DAG.

    Attributes:
        states: ``(N, state_dim)`` by level (``s0`` first); levels: ``(N,)``.
        child: ``(N, n_actions)`` row of the child by each forward action, ``-1`` where the
            action is masked and in the exit column.
        forward_mask: ``(N, n_actions)``; terminal: ``(N,)`` (exit allowed).
        log_reward: ``(N,)`` float64, ``-inf`` at non-terminal states.
    """

    states: Tensor
    levels: Tensor
    child: Tensor
    forward_mask: Tensor
    terminal: Tensor
    log_reward: Tensor


def dag_table(env: DAGEnv, max_states: int = 200_000) -> DAGTable:
    """Enumerate ``env`` (at most ``max_states`` states)."""
    check(isinstance(env, DAGEnv), "env", env, "a DAGEnv")
    states, levels = env.all_states()
    n = states.shape[0]
    check(n <= max_states, "env", env, f"an environment with at most {max_states} states")
    mask = env.forward_mask(states)
    child = torch.full(mask.shape, -1, dtype=torch.long)
    for a in range(env.n_actions - 1):
        rows = mask[:, a].nonzero()[:, 0]
        if rows.numel():
            acts = torch.full((rows.numel(),), a, dtype=torch.long)
            child[rows, a] = env.index(env._step(states[rows], acts))
    terminal = mask[:, env.exit_action]
    log_r = torch.full((n,), float("-inf"), dtype=torch.float64)
    log_r[terminal] = env.log_reward(states[terminal]).double()
    return DAGTable(states, levels, child, mask, terminal, log_r)


def _by_level(levels: Tensor) -> list[Tensor]:
    return [(levels == v).nonzero()[:, 0] for v in torch.unique(levels).tolist()]


@torch.no_grad()
def exact_terminal_distribution(
    env: DAGEnv, policy: Policy, table: DAGTable | None = None
) -> Tensor:
    """``P_T(x)`` of ``policy`` for every state of ``env`` (0 where exit is not allowed).

    Returns:
        ``(N,)`` float64 over the rows of ``env.all_states()``; sums to 1.

    Example:
        >>> from flowfields.gflownet import HyperGrid, MLPPolicy
        >>> env = HyperGrid(2, 8)
        >>> p_t = exact_terminal_distribution(env, MLPPolicy(env, 16, 1))
        >>> p_t.shape, round(float(p_t.sum()), 9)
        (torch.Size([64]), 1.0)
        >>> l1_error(exact_terminal_distribution(env, optimal_policy(env)),
        ...          target_distribution(env)) < 1e-12
        True
    """
    table = dag_table(env) if table is None else table
    log_pf = policy.log_pf(table.states.to(policy.log_z.device))
    return terminal_distribution_from_log_pf(env, log_pf, table)


def terminal_distribution_from_log_pf(env: DAGEnv, log_pf: Tensor, table: DAGTable) -> Tensor:
    """``P_T`` from forward log-probabilities ``(N, n_actions)`` over the rows of ``table``
    (any policy, e.g. a peer library's, evaluated on ``env.all_states()``)."""
    check(
        tuple(log_pf.shape) == tuple(table.forward_mask.shape),
        "log_pf",
        log_pf,
        f"shape {tuple(table.forward_mask.shape)}",
    )
    # renormalised in float64, so that a float32 policy's rounding does not leak into P_T
    log_pf = log_pf.detach().double().cpu().log_softmax(-1)
    p = torch.zeros(table.states.shape[0], dtype=torch.float64)
    p[0] = 1.0
    for rows in _by_level(table.levels):
        ch = table.child[rows]
        ok = ch >= 0
        mass = p[rows, None] * log_pf[rows].exp()
        p.index_add_(0, ch[ok], mass[ok])
    pt = p * log_pf[:, env.exit_action].exp()
    return torch.where(table.terminal, pt, torch.zeros_like(pt))


def target_distribution(env: DAGEnv, table: DAGTable | None = None) -> Tensor:
    """``R(x) / Z`` over the rows of ``env.all_states()`` (0 at non-terminal states)."""
    table = dag_table(env) if table is None else table
    return torch.softmax(table.log_reward, 0)


def l1_error(p: Tensor, q: Tensor) -> float:
    """``sum_x |p(x) - q(x)|`` (twice the total variation)."""
    return float((p - q).abs().sum())


@torch.no_grad()
def optimal_policy(env: DAGEnv, log_pb: Tensor | None = None) -> TabularPolicy:
    """The exact solution of every balance objective for a given backward policy.

    Args:
        env: an enumerable environment.
        log_pb: ``(N, n_back_actions)`` backward log-probabilities per state row (``-inf``
            where masked); default: uniform over the allowed parents.

    Returns:
        A :class:`TabularPolicy` with ``pb_table = log P_B``, ``flow_table = log F``,
        ``pf_table = log`` edge flows (exit edge ``log R``) and ``log_z = log F(s0)``: its
        ``P_T = R / Z`` and every residual of :mod:`~flowfields.gflownet.losses` is zero.
    """
    table = dag_table(env)
    pol = TabularPolicy(env, learn_pb=True)
    states = table.states
    bmask = env.backward_mask(states)
    if log_pb is None:
        log_pb = torch.zeros(bmask.shape, dtype=torch.float64).masked_fill(~bmask, -math.inf)
        log_pb = log_pb.log_softmax(-1).nan_to_num(nan=-math.inf)
    check(
        tuple(log_pb.shape) == tuple(bmask.shape), "log_pb", log_pb, f"shape {tuple(bmask.shape)}"
    )
    log_pb = log_pb.double()
    n = states.shape[0]
    log_f = table.log_reward.clone()
    edge = torch.full(table.child.shape, -math.inf, dtype=torch.float64)
    for rows in reversed(_by_level(table.levels)):
        for a in range(env.n_actions - 1):
            ch = table.child[rows, a]
            ok = ch >= 0
            if not bool(ok.any()):
                continue
            r, c = rows[ok], ch[ok]
            b = env.backward_action(states[r], torch.full((r.numel(),), a, dtype=torch.long))
            edge[r, a] = log_f[c] + log_pb[c, b]
        log_f[rows] = torch.logaddexp(table.log_reward[rows], edge[rows].logsumexp(-1))
    edge[:, env.exit_action] = table.log_reward
    pol.pf_table.data = edge.nan_to_num(neginf=-1e30).clamp(min=-1e30)
    pol.pb_table.data = log_pb.nan_to_num(neginf=-1e30).clamp(min=-1e30)
    pol.flow_table.data = log_f.clamp(min=-1e30)
    pol.log_z.data = log_f[0].clone()
    assert pol.pf_table.shape[0] == n
    return pol


def all_trajectories(
    env: DAGEnv, x_row: int | None = None, max_count: int = 100_000
) -> Trajectories:
    """Every complete trajectory of ``env`` (ending at state row ``x_row`` if given).

    Depth-first from ``s0``; padded to the longest. At most ``max_count`` trajectories.
    """
    table = dag_table(env)
    paths: list[tuple[list[int], list[int]]] = []

    def walk(row: int, rows: list[int], acts: list[int]) -> None:
        check(len(paths) < max_count, "env", env, f"at most {max_count} trajectories")
        if table.terminal[row] and (x_row is None or row == x_row):
            paths.append((rows, [*acts, env.exit_action]))
        for a in range(env.n_actions - 1):
            c = int(table.child[row, a])
            if c >= 0:
                walk(c, [*rows, c], [*acts, a])

    walk(0, [0], [])
    check(len(paths) > 0, "x_row", x_row, "a terminal state reachable from s0")
    t_max = max(len(a) for _, a in paths)
    b = len(paths)
    states = torch.empty(t_max + 1, b, env.state_dim, dtype=torch.long)
    actions = torch.full((t_max, b), -1, dtype=torch.long)
    for k, (rows, acts) in enumerate(paths):
        padded = rows + [rows[-1]] * (t_max + 1 - len(rows))
        states[:, k] = table.states[torch.tensor(padded)]
        actions[: len(acts), k] = torch.tensor(acts)
    lengths = (actions >= 0).sum(0)
    x = states[lengths - 1, torch.arange(b)]
    return Trajectories(states, actions, lengths, x, env.log_reward(x).double())


@torch.no_grad()
def posterior_log_pb(env: DAGEnv, policy: Policy, table: DAGTable | None = None) -> Tensor:
    """The backward policy that is the exact posterior of ``policy``'s ``P_F``.

    With ``p(s)`` the probability that a forward trajectory visits ``s`` (dynamic programming
    by level, ``p(s0) = 1``), ``P_post(s | s') = p(s) P_F(s' | s) / p(s')``; along a trajectory
    to ``x`` its product is ``P_F(tau | x) = P_F(tau) / P_T(x)`` (Zhang et al.,
    arXiv:2209.02606, sec. 3: the ELBO is tight exactly for this ``P_B``).

    Returns:
        ``(N, n_back_actions)`` float64 log-probabilities over the rows of ``env.all_states()``,
        ``-inf`` where the backward mask forbids the action (all ``-inf`` at ``s0`` and at
        states that ``P_F`` never visits).
    """
    table = dag_table(env) if table is None else table
    states = table.states
    log_pf = policy.log_pf(states.to(policy.log_z.device)).detach().double().cpu()
    log_pf = log_pf.log_softmax(-1)
    p = torch.zeros(states.shape[0], dtype=torch.float64)
    p[0] = 1.0
    for rows in _by_level(table.levels):
        ch = table.child[rows]
        ok = ch >= 0
        p.index_add_(0, ch[ok], (p[rows, None] * log_pf[rows].exp())[ok])
    out = torch.full((states.shape[0], env.n_back_actions), -math.inf, dtype=torch.float64)
    for a in range(env.n_actions - 1):
        r = (table.child[:, a] >= 0).nonzero()[:, 0]
        if r.numel() == 0:
            continue
        c = table.child[r, a]
        b = env.backward_action(states[r], torch.full((r.numel(),), a, dtype=torch.long))
        out[c, b] = p[r].log() + log_pf[r, a] - p[c].log()
    return out.masked_fill(out.isnan(), -math.inf)


@torch.no_grad()
def exact_data_bounds(
    env: DAGEnv, policy: Policy, traj: Trajectories | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(log P_T(x), ELBO(x), KL(P_B(tau|x) || P_F(tau|x)))`` for every state row, exactly.

    Three independent computations, so that the identity ``log P_T - ELBO = KL`` is a check
    of the code and not of algebra: ``log P_T(x)`` by dynamic programming
    (:func:`exact_terminal_distribution`); ``ELBO(x) = sum_{tau -> x} P_B(tau|x)
    (log P_F(tau) - log P_B(tau|x))`` by enumerating every complete trajectory (``traj``:
    :func:`all_trajectories`, computed if not given); ``KL = sum_{tau -> x} P_B(tau|x)
    (log P_B(tau|x) - log P_post(tau|x))`` with the posterior chain of
    :func:`posterior_log_pb` (never ``P_T``). Rows that are not terminal hold ``-inf``,
    ``nan``, ``nan``.

    Returns:
        Three ``(N,)`` float64 tensors over the rows of ``env.all_states()``.
    """
    table = dag_table(env)
    traj = all_trajectories(env) if traj is None else traj
    terms = evaluate(policy, traj)
    log_pf = terms.log_pf_total().double().cpu()
    log_pb = terms.log_pb_total().double().cpu()
    log_pt = exact_terminal_distribution(env, policy, table).log()
    post = posterior_log_pb(env, policy, table)
    acts, states = traj.actions.cpu(), traj.states.cpu()
    move = (acts >= 0) & (acts != env.exit_action)
    ti, bi = move.nonzero(as_tuple=True)
    back = env.backward_action(states[ti, bi], acts[ti, bi])
    step = post[env.index(states[ti + 1, bi]), back]
    log_post = torch.zeros(acts.shape, dtype=torch.float64).index_put((ti, bi), step).sum(0)
    rows = env.index(traj.x).cpu()
    n = table.states.shape[0]
    q = log_pb.exp()
    elbo = torch.zeros(n, dtype=torch.float64).index_add(0, rows, q * (log_pf - log_pb))
    kl = torch.zeros(n, dtype=torch.float64).index_add(0, rows, q * (log_pb - log_post))
    seen = torch.zeros(n, dtype=torch.bool)
    seen[rows] = True
    nan = torch.full_like(elbo, math.nan)
    return log_pt, torch.where(seen, elbo, nan), torch.where(seen, kl, nan)
