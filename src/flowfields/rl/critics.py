"""Twin soft Q-networks, Polyak-averaged targets, and the critic marginalized over latents.

Fujimoto et al. (arXiv:1802.09477) twin critics with the minimum in the target, as SAC
(arXiv:1801.01290); the marginalized critic ``Q(x, a) = agg_k Q(x, s^k, a)`` of SMAC
(arXiv:2210.00999) over the latent particles of :class:`~flowfields.rl.LatentPolicy`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfields.errors import check
from flowfields.rl.entropy import aggregate
from flowfields.rl.nets import relu_mlp

__all__ = ["TwinCritic", "marginal_q", "polyak_update"]


class TwinCritic(nn.Module):
    """Two independent Q-networks ``Q_j(z, a)``, ``z`` the observation (and latent) features.

    Args:
        in_dim: size of ``z``. act_dim: action size. hidden, depth: each MLP (ReLU).

    Shapes:
        ``forward(z, a)``: (..., in_dim), (..., act_dim) -> (2, ...).
    """

    def __init__(self, in_dim: int, act_dim: int, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        self.in_dim, self.act_dim = in_dim, act_dim
        self.q1 = relu_mlp(in_dim + act_dim, 1, hidden, depth)
        self.q2 = relu_mlp(in_dim + act_dim, 1, hidden, depth)

    def forward(self, z: Tensor, a: Tensor) -> Tensor:
        za = torch.cat([z, a], dim=-1)
        return torch.stack([self.q1(za)[..., 0], self.q2(za)[..., 0]])


def marginal_q(
    critic: TwinCritic, obs: Tensor, action: Tensor, latents: Tensor | None, how: str = "mean"
) -> Tensor:
    """Twin Q-values, marginalized over latent particles when ``latents`` is given.

    Args:
        critic: the twin critic; its ``in_dim`` is ``obs_dim`` (no latents) or
            ``obs_dim + latent_dim``.
        obs: (batch, obs_dim). action: (batch, act_dim).
        latents: None or (P, batch, latent_dim): then ``Q_j = agg_k Q_j(x, s^k, a)``.
        how: the aggregation (:func:`~flowfields.rl.aggregate`).

    Returns:
        (2, batch).
    """
    if latents is None:
        return critic(obs, action)
    check(
        latents.ndim == 3 and latents.shape[1] == obs.shape[0],
        "latents",
        latents,
        f"a tensor of shape (P, {obs.shape[0]}, latent_dim)",
    )
    P = latents.shape[0]
    z = torch.cat([obs.expand(P, *obs.shape), latents], dim=-1)
    q = critic(z, action.expand(P, *action.shape))  # (2, P, batch)
    return aggregate(q.transpose(0, 1), how)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``theta_target <- (1 - tau) theta_target + tau theta_source`` (buffers copied).

    Raises:
        FlowfieldsError: ``tau`` outside [0, 1].
    """
    check(isinstance(tau, (int, float)) and 0.0 <= tau <= 1.0, "tau", tau, "a float in [0, 1]")
    t_params: list[Tensor] = list(target.parameters())
    s_params: list[Tensor] = list(source.parameters())
    check(len(t_params) == len(s_params), "target", target, "a module shaped like source")
    torch._foreach_lerp_(t_params, s_params, float(tau))
    for tb, sb in zip(target.buffers(), source.buffers()):
        tb.copy_(sb)
