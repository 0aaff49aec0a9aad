"""Training steps shared by the GFlowNet experiments and benchmark.

One reward-mode step draws ``batch`` trajectories from the current policy (optionally
explored by temperature / epsilon; log-probabilities are always the untempered policy's),
evaluates the chosen balance objective and updates the policy through the engine's
:class:`~flowfields.engine.TrainState` with Adam: ``log Z`` at its own learning rate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowfields.engine import TrainState
from flowfields.gflownet import Policy, gfn_loss, sample_forward

__all__ = ["gfn_state", "reward_step", "target_logits"]


def target_logits(n: int, scale: float, seed: int) -> Tensor:
    """Logits of a known discrete distribution for data mode: ``scale * N(0, 1)``, seeded,
    float64, shape ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, generator=g, dtype=torch.float64)


def gfn_state(policy: Policy, lr: float, lr_log_z: float) -> TrainState:
    """A :class:`TrainState` with one Adam over the policy: ``log Z`` at ``lr_log_z``."""
    opt = torch.optim.Adam(policy.param_groups(lr, lr_log_z))
    return TrainState({"policy": policy}, {"policy": opt})


def reward_step(
    loss: str,
    batch: int,
    *,
    temperature: float = 1.0,
    epsilon: float = 0.0,
    lam: float = 0.9,
) -> Callable[[TrainState, int], dict[str, Tensor]]:
    """A ``step_fn`` for :func:`flowfields.engine.fit`: one batch of on-/off-policy training.

    Trajectories are drawn from torch's global RNG (checkpointed by the engine).
    """

    def step(state: TrainState, _: int) -> dict[str, Tensor]:
        policy = state["policy"]
        assert isinstance(policy, Policy)
        traj = sample_forward(policy.env, policy, batch, temperature=temperature, epsilon=epsilon)
        value, _terms = gfn_loss(loss, policy, traj, lam=lam)
        out = state.update("policy", value)
        return {"loss": out, "log_z": policy.log_z.detach()}

    return step
