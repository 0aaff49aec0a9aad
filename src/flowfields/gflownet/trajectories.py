"""Batched trajectories, forward and backward samplers, and their per-step log-probabilities.

A trajectory ``s0 -> s1 -> ... -> s_n = x -> s_f`` takes ``n + 1`` actions, the last the exit.
A batch of ``B`` is stored padded to ``T`` steps, forward in time whichever way it was drawn:
states ``(T + 1, B, state_dim)`` (positions past ``x`` repeat ``x``), actions ``(T, B)`` with
``-1`` as padding, and ``lengths`` ``(B,)`` = ``n + 1``.

Samplers draw without gradients; :func:`evaluate` then computes ``log P_F`` and ``log P_B`` of
every step (and ``log F`` of every visited state) in one batched pass of the policy. Off-policy
exploration (temperature, epsilon-uniform) therefore changes only which actions are drawn:
log-probabilities are always those of the untempered policy (Zhang et al., arXiv:2209.02606,
sec. 2; Malkin et al. 2022 for TB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowfields.errors import check, check_shape
from flowfields.gflownet.env import DAGEnv
from flowfields.gflownet.policy import Policy, masked_log_softmax

__all__ = ["Trajectories", "TrajectoryTerms", "evaluate", "sample_backward", "sample_forward"]


@dataclass
class Trajectories:
    """A padded batch of complete trajectories (forward order).

    Attributes:
        states: ``(T + 1, B, state_dim)`` long.
        actions: ``(T, B)`` long, ``-1`` past the exit.
        lengths: ``(B,)`` actions per trajectory, exit included.
        x: ``(B, state_dim)`` terminal states.
        log_reward: ``(B,)`` ``log R(x)`` (float64).
    """

    states: Tensor
    actions: Tensor
    lengths: Tensor
    x: Tensor
    log_reward: Tensor

    @property
    def batch(self) -> int:
        return int(self.actions.shape[1])


@dataclass
class TrajectoryTerms:
    """Per-step quantities of a batch under a policy (zeros on padding).

    Attributes:
        log_pf: ``(T, B)`` ``log P_F(s_{t+1} | s_t)`` (the exit at step ``n``).
        log_pb: ``(T, B)`` ``log P_B(s_t | s_{t+1})`` (0 at the exit step).
        log_f: ``(T + 1, B)`` ``log F(s_t)`` for ``t <= n`` and ``log R(x)`` at ``t = n + 1``
            (the flow into ``s_f`` through ``x``), or None without flows.
        log_reward, lengths: as in :class:`Trajectories`.
    """

    log_pf: Tensor
    log_pb: Tensor
    log_f: Tensor | None
    log_reward: Tensor
    lengths: Tensor

    def log_pf_total(self) -> Tensor:
        """``log P_F(tau)``, ``(B,)``."""
        return self.log_pf.sum(0)

    def log_pb_total(self) -> Tensor:
        """``log P_B(tau | x)``, ``(B,)``."""
        return self.log_pb.sum(0)


def _check_sampler(env: DAGEnv, policy: Policy, batch: int, temperature: float, eps: float):
    check(isinstance(env, DAGEnv), "env", env, "a DAGEnv")
    check(isinstance(policy, Policy), "policy", policy, "a gflownet Policy")
    check(isinstance(batch, int) and batch >= 1, "batch", batch, "an integer >= 1")
    check(temperature > 0, "temperature", temperature, "a float > 0")
    check(0 <= eps <= 1, "epsilon", eps, "a float in [0, 1]")


def _draw(log_p: Tensor, mask: Tensor, temperature: float, eps: float, gen) -> Tensor:
    """Actions from ``(1 - eps) softmax(log_p / T) + eps uniform(mask)``."""
    probs = (log_p / temperature).masked_fill(~mask, float("-inf")).softmax(-1)
    if eps > 0:
        uniform = mask.to(probs.dtype) / mask.sum(-1, keepdim=True)
        probs = (1 - eps) * probs + eps * uniform
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


@torch.no_grad()
def sample_forward(
    env: DAGEnv,
    policy: Policy,
    batch: int,
    *,
    temperature: float = 1.0,
    epsilon: float = 0.0,
    generator: torch.Generator | None = None,
) -> Trajectories:
    """``batch`` trajectories from ``s0`` under ``P_F`` (tempered / epsilon-mixed if asked).

    Args:
        env, policy: the environment and the policy.
        batch: number of trajectories.
        temperature: divide the log-probabilities by it before sampling (exploration).
        epsilon: mix in the uniform distribution over allowed actions with this weight.
        generator: a ``torch.Generator`` (default: torch's global RNG).

    Returns:
        :class:`Trajectories`; pass them to :func:`evaluate` for log-probabilities.
    """
    _check_sampler(env, policy, batch, temperature, epsilon)
    device = policy.log_z.device
    s = env.initial(batch, device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    states, actions = [s], []
    for _ in range(env.max_length):
        a = torch.full((batch,), -1, dtype=torch.long, device=device)
        active = (~done).nonzero()[:, 0]
        sa = s[active]
        mask = env.forward_mask(sa)
        a[active] = _draw(policy.log_pf(sa), mask, temperature, epsilon, generator)
        move = a.ge(0) & a.ne(env.exit_action)
        s = s.clone()
        s[move] = env._step(s[move], a[move])
        done = done | (a == env.exit_action)
        states.append(s)
        actions.append(a)
        if bool(done.all()):
            break
    acts = torch.stack(actions)
    lengths = (acts >= 0).sum(0)
    return Trajectories(torch.stack(states), acts, lengths, s, env.log_reward(s))


@torch.no_grad()
def sample_backward(
    env: DAGEnv,
    policy: Policy,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Trajectories:
    """Trajectories drawn backward from terminal states ``x`` under ``P_B`` to ``s0``.

    Data mode (Zhang et al., arXiv:2209.02606, sec. 3): the returned batch is in forward order,
    ending with the exit at ``x``.

    Shapes: x ``(B, state_dim)``.
    """
    check(isinstance(policy, Policy), "policy", policy, "a gflownet Policy")
    env._check_states(x, "x")
    log_reward = env.log_reward(x)  # also checks that x is terminal
    b = x.shape[0]
    s = x.to(policy.log_z.device)
    back = [s]  # back[k]: state k steps before x
    fwd_actions = []
    for _ in range(env.max_length):
        alive = (~env.is_initial(s)).nonzero()[:, 0]
        if alive.numel() == 0:
            break
        sa = s[alive]
        mask = env.backward_mask(sa)
        ba = _draw(policy.log_pb(sa), mask, 1.0, 0.0, generator)
        parents, fa = env._backward_step(sa, ba)
        a = torch.full((b,), -1, dtype=torch.long, device=s.device)
        a[alive] = fa
        s = s.clone()
        s[alive] = parents
        back.append(s)
        fwd_actions.append(a)
    n = torch.stack(fwd_actions).ge(0).sum(0) if fwd_actions else s.new_zeros(b)
    return _reverse(env, torch.stack(back), fwd_actions, n, log_reward.to(s.device))


def _reverse(env: DAGEnv, back: Tensor, fwd_actions: list[Tensor], n: Tensor, log_r: Tensor):
    """Backward-drawn states / actions to the forward-order padded layout."""
    steps, b = back.shape[0] - 1, back.shape[1]
    t = torch.arange(steps + 2, device=back.device)[:, None]
    src = (n[None, :] - t).clamp(min=0)  # forward position t is n - t steps before x
    states = back.gather(0, src[..., None].expand(-1, -1, back.shape[2]))
    acts_back = torch.stack(fwd_actions) if fwd_actions else back.new_zeros(0, b)
    # the forward action at position t < n is the one taken k = n - 1 - t steps before x
    k = (n[None, :] - 1 - t[:-1]).clamp(min=0)
    pad = back.new_full((1, b), -1)
    acts = torch.cat([acts_back, pad]).gather(0, k.clamp(max=max(steps, 0)))
    acts = torch.where(t[:-1] < n[None, :], acts, torch.full_like(acts, -1))
    acts = torch.where(t[:-1] == n[None, :], torch.full_like(acts, env.exit_action), acts)
    return Trajectories(states, acts, n + 1, back[0], log_r)


def evaluate(policy: Policy, traj: Trajectories, *, flows: bool = False) -> TrajectoryTerms:
    """Per-step ``log P_F``, ``log P_B`` (and ``log F``) of ``traj`` under ``policy``.

    One batched call of each network over all the steps of the batch; gradients flow into the
    policy. ``P_B`` is evaluated at the child of every non-exit step.
    """
    check(isinstance(policy, Policy), "policy", policy, "a gflownet Policy")
    check(isinstance(traj, Trajectories), "traj", traj, "Trajectories")
    env, acts = policy.env, traj.actions
    check_shape(acts, "traj.actions", ndim=2)
    valid = acts >= 0
    ti, bi = valid.nonzero(as_tuple=True)
    here, a = traj.states[ti, bi], acts[ti, bi]
    lpf = masked_log_softmax(policy.pf_logits(here), env.forward_mask(here))
    lpf = lpf.gather(1, a[:, None])[:, 0]
    dtype = lpf.dtype
    log_pf = lpf.new_zeros(acts.shape).index_put((ti, bi), lpf)
    move = valid & (acts != env.exit_action)
    mi, mb = move.nonzero(as_tuple=True)
    child = traj.states[mi + 1, mb]
    back_a = env.backward_action(traj.states[mi, mb], acts[mi, mb])
    lpb = policy.log_pb(child).gather(1, back_a[:, None])[:, 0].to(dtype)
    log_pb = lpf.new_zeros(acts.shape).index_put((mi, mb), lpb)
    log_f = None
    if flows:
        lf = policy.log_flow(here).to(dtype)
        log_f = lpf.new_zeros(acts.shape[0] + 1, acts.shape[1]).index_put((ti, bi), lf)
        cols = torch.arange(acts.shape[1], device=acts.device)
        log_f = log_f.index_put((traj.lengths, cols), traj.log_reward.to(dtype))
    return TrajectoryTerms(log_pf, log_pb, log_f, traj.log_reward.to(dtype), traj.lengths)
