"""Policies for continuous actions in ``[-1, 1]^d``: the tanh-Gaussian of SAC and SMAC's
latent-variable policy.

Haarnoja et al., "Soft Actor-Critic" (arXiv:1801.01290, Appendix C: the tanh change of
variables), and Zhang et al., "Latent State Marginalization as a Low-cost Approach for Improving
Exploration" (arXiv:2210.00999): ``pi(a|x) = ∫ pi(a|s) q(s|x) ds`` with a Gaussian latent and a
tanh-Gaussian action head. The trunk runs once per observation; the ``K + 1`` latent particles
only pass through a small head, in one batched call.

Actions are in ``[-1, 1]``; environments rescale them to their bounds (as stable-baselines3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowfields.errors import check
from flowfields.rl.entropy import marginal_entropy_estimate
from flowfields.rl.nets import relu_mlp

__all__ = [
    "LOG_STD_RANGE",
    "LatentPolicy",
    "PolicySample",
    "TanhGaussianPolicy",
    "gaussian_log_prob",
    "tanh_gaussian_log_prob",
    "tanh_log_det",
]

#: Clamp of the action head's log standard deviation (the stable-baselines3 values).
LOG_STD_RANGE = (-20.0, 2.0)
_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(u: Tensor, mu: Tensor, log_std: Tensor) -> Tensor:
    """``sum_i log N(u_i; mu_i, exp(log_std_i)^2)`` over the last dimension: (..., d) -> (...)."""
    z = (u - mu) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)


def tanh_log_det(u: Tensor) -> Tensor:
    """``sum_i log(1 - tanh(u_i)^2)``, the log-Jacobian of ``a = tanh(u)``: (..., d) -> (...).

    Written as ``2 (log 2 - u - softplus(-2u))``, finite for every ``u`` (no ``1 - a^2`` that
    rounds to 0 for large ``|u|``).
    """
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


def tanh_gaussian_log_prob(u: Tensor, mu: Tensor, log_std: Tensor) -> Tensor:
    """``log pi(tanh u)`` for ``u ~ N(mu, diag exp(2 log_std))``: the Gaussian log-density of the
    pre-tanh ``u`` minus :func:`tanh_log_det` (change of variables). Shapes (..., d) -> (...)."""
    return gaussian_log_prob(u, mu, log_std) - tanh_log_det(u)


@dataclass
class PolicySample:
    """A reparameterised action draw.

    Attributes:
        action: (batch, d) ``tanh(pre_tanh)`` in ``(-1, 1)``.
        pre_tanh: (batch, d).
        log_prob: (batch,) ``log pi(a|x)`` (SAC) or the SMAC estimate ``-H_K`` (latent policy).
        latents: (K+1, batch, latent_dim) the particles ``s^0..s^K`` (latent policy) or None.
        log_probs: (K+1, batch) ``log pi(a|s^k)`` (latent policy) or None.
        features: (batch, hidden) the trunk's output ``h(x)`` the draw was made from (for the
            recurrent filter's auxiliary loss, :meth:`~flowfields.rl.SAC.prediction_loss`).
    """

    action: Tensor
    pre_tanh: Tensor
    log_prob: Tensor
    latents: Tensor | None = None
    log_probs: Tensor | None = None
    features: Tensor | None = None


def _noise(noise: Tensor | None, like: Tensor) -> Tensor:
    if noise is None:
        return torch.randn_like(like)
    check(noise.shape == like.shape, "noise", noise, f"a tensor of shape {tuple(like.shape)}")
    return noise


class TanhGaussianPolicy(nn.Module):
    """SAC's policy ``a = tanh(mu(x) + sigma(x) eps)`` (arXiv:1801.01290).

    Args:
        obs_dim, act_dim: observation and action sizes.
        hidden, depth: the MLP (ReLU), as stable-baselines3's ``net_arch=[hidden] * depth``.
        trunk: use this module (obs_dim -> hidden features, e.g.
            :func:`~flowfields.rl.belief.recurrent_trunk`) instead of the MLP.

    Shapes:
        ``forward(obs)``: (batch, obs_dim) -> ``(mu, log_std)`` each (batch, act_dim).
    """

    n_particles = 0

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 2,
        *,
        trunk: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.trunk = trunk if trunk is not None else relu_mlp(obs_dim, None, hidden, depth)
        self.mu = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    def _gaussian(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu(h), self.log_std(h).clamp(*LOG_STD_RANGE)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self._gaussian(self.trunk(obs))

    def sample(self, obs: Tensor, noise: Tensor | None = None) -> PolicySample:
        """Reparameterised draw; ``noise`` (batch, act_dim) replaces the standard normal draw."""
        h = self.trunk(obs)
        mu, log_std = self._gaussian(h)
        u = mu + log_std.exp() * _noise(noise, mu)
        return PolicySample(torch.tanh(u), u, tanh_gaussian_log_prob(u, mu, log_std), features=h)

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """(batch, obs_dim) -> (batch, act_dim); deterministic: ``tanh(mu(x))``."""
        return torch.tanh(self(obs)[0]) if deterministic else self.sample(obs).action


class LatentPolicy(nn.Module):
    """SMAC's latent-variable policy ``pi(a|x) = ∫ pi(a|s) q(s|x) ds`` (arXiv:2210.00999).

    ``h = trunk(x)``; ``q(s|x) = N(mu_s(h), diag sigma_s(h)^2)``; the head
    ``pi(a|s) = tanh-N(mu_a, sigma_a)`` with ``(mu_a, log sigma_a) = W_o relu(W_h h + W_s s)``.
    The term ``W_h h`` is computed once per observation and broadcast over the ``K + 1`` latent
    particles, so the particles cost only ``W_s s``, one activation and ``W_o``.

    Args:
        obs_dim, act_dim: sizes. hidden, depth: the trunk MLP (ReLU).
        latent_dim: size of ``s``. head_hidden: width of the head.
        n_particles: ``K >= 0``, extra latents of the entropy estimate.
        latent_std: fix ``sigma_s`` to this value (0 gives a degenerate latent, i.e. a
            tanh-Gaussian policy); None learns it.
        trunk: use this module (obs_dim -> hidden features) instead of the MLP; with
            :func:`~flowfields.rl.belief.recurrent_trunk` ``q(s|x)`` is the belief of a
            recurrent filter over the observation window (the POMDP variant).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 2,
        *,
        latent_dim: int = 8,
        head_hidden: int = 64,
        n_particles: int = 8,
        latent_std: float | None = None,
        trunk: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("head_hidden", head_hidden)):
            check(isinstance(v, int) and v >= 1, name, v, "a positive integer")
        check(
            isinstance(n_particles, int) and n_particles >= 0,
            "n_particles",
            n_particles,
            "an integer K >= 0",
        )
        check(
            latent_std is None or (isinstance(latent_std, (int, float)) and latent_std >= 0),
            "latent_std",
            latent_std,
            "None (learned) or a float >= 0",
        )
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.n_particles, self.latent_std = n_particles, latent_std
        self.trunk = trunk if trunk is not None else relu_mlp(obs_dim, None, hidden, depth)
        self.latent = nn.Linear(hidden, 2 * latent_dim)
        self.head_h = nn.Linear(hidden, head_hidden)
        self.head_s = nn.Linear(latent_dim, head_hidden, bias=False)
        self.head_out = nn.Linear(head_hidden, 2 * act_dim)

    def encode(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_h h, mu_s, sigma_s)``: (batch, head_hidden), (batch, latent_dim) twice."""
        return self._encode(self.trunk(obs))

    def _encode(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu_s, log_std_s = self.latent(h).chunk(2, dim=-1)
        if self.latent_std is None:
            std_s = log_std_s.clamp(-5.0, 2.0).exp()
        else:
            std_s = torch.full_like(mu_s, float(self.latent_std))
        return self.head_h(h), mu_s, std_s

    def head(self, head_h: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu_a, log_std_a)`` of ``pi(a|s)``: head_h (batch, H), s (P, batch, latent_dim) ->
        each (P, batch, act_dim), in one call over the P particles."""
        mu, log_std = self.head_out(torch.relu(head_h + self.head_s(s))).chunk(2, dim=-1)
        return mu, log_std.clamp(*LOG_STD_RANGE)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu_a, log_std_a)`` of the head at the latent mean ``s = mu_s(x)``."""
        head_h, mu_s, _ = self.encode(obs)
        mu, log_std = self.head(head_h, mu_s[None])
        return mu[0], log_std[0]

    def draw_latents(self, obs: Tensor, n: int) -> Tensor:
        """(n, batch, latent_dim) draws of ``q(s|x)``."""
        _, mu_s, std_s = self.encode(obs)
        return mu_s + std_s * torch.randn((n, *mu_s.shape), dtype=mu_s.dtype, device=mu_s.device)

    def sample(
        self, obs: Tensor, noise: Tensor | None = None, n_particles: int | None = None
    ) -> PolicySample:
        """``s^0..s^K ~ q(s|x)``, ``a ~ pi(.|s^0)`` reparameterised, ``log_prob = -H_K``.

        ``noise`` (batch, act_dim) replaces the action's normal draw, which is drawn before the
        latents' (so a degenerate latent consumes the RNG like SAC for the action).
        """
        K = self.n_particles if n_particles is None else n_particles
        check(isinstance(K, int) and K >= 0, "n_particles", K, "an integer K >= 0")
        h = self.trunk(obs)
        head_h, mu_s, std_s = self._encode(h)
        eps_a = _noise(noise, mu_s.new_empty(mu_s.shape[0], self.act_dim))
        eps_s = torch.randn((K + 1, *mu_s.shape), dtype=mu_s.dtype, device=mu_s.device)
        s = mu_s + std_s * eps_s
        mu_a, log_std_a = self.head(head_h, s)
        u = mu_a[0] + log_std_a[0].exp() * eps_a
        log_probs = gaussian_log_prob(u, mu_a, log_std_a) - tanh_log_det(u)
        log_prob = -marginal_entropy_estimate(log_probs)
        return PolicySample(torch.tanh(u), u, log_prob, s, log_probs, h)

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """(batch, obs_dim) -> (batch, act_dim); deterministic: ``tanh(mu_a(mu_s(x)))``."""
        if deterministic:
            return torch.tanh(self(obs)[0])
        return self.sample(obs, n_particles=0).action
