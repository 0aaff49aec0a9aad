"""SAC and SMAC agents: networks, losses and one update through the engine's train state.

Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (arXiv:1812.05905: twin
critics, Polyak targets, automatic temperature), with the conventions of stable-baselines3
(update order temperature -> critic -> actor -> targets; ``log alpha`` learned; target
entropy ``-act_dim``; actions in [-1, 1]). SMAC (Zhang et al., arXiv:2210.00999) replaces the
policy by :class:`~flowfields.rl.LatentPolicy` and ``log pi(a|x)`` by the estimate ``-H_K``,
and may marginalize the critic over the latent particles.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowfields.engine import TrainState
from flowfields.errors import check
from flowfields.rl.belief import recurrent_trunk
from flowfields.rl.buffer import Batch
from flowfields.rl.critics import TwinCritic, marginal_q, polyak_update
from flowfields.rl.entropy import AGGREGATIONS
from flowfields.rl.nets import relu_mlp
from flowfields.rl.policies import LatentPolicy, PolicySample, TanhGaussianPolicy

__all__ = ["SAC", "SMAC", "AgentConfig", "LogAlpha"]


@dataclass
class AgentConfig:
    """Hyper-parameters of SAC / SMAC (defaults: stable-baselines3's SAC, K = 8 for SMAC).

    Attributes:
        hidden, depth: actor trunk and each critic (``net_arch=[hidden] * depth``).
        lr: Adam learning rate of actor, critic and temperature. gamma: discount.
        tau: Polyak rate of the target critic. init_alpha: initial temperature.
        target_entropy: None for ``-act_dim``.
        n_particles: SMAC's K. latent_dim, head_hidden: SMAC's latent and head.
        latent_std: None (learned) or a fixed latent standard deviation.
        aggregation: critic aggregation over latents (``min``, ``mean``, ``logmeanexp``).
        critic_latent: whether the critic sees the latent (``Q(x, s, a)``, marginalized).
        filter_window: ``L > 0``: observations are windows of the last L steps and the actor's
            trunk is the recurrent :class:`~flowfields.rl.BeliefFilter` (SMAC: its belief is
            the latent); the critics read the flattened window. filter_hidden: its GRU state.
        filter_aux: weight of the filter's auxiliary loss (0: none, trained by the actor's loss
            alone): the actor's features and the action taken predict the next observation
            (:meth:`SAC.prediction_loss`; needs ``filter_window > 0``).
    """

    hidden: int = 256
    depth: int = 2
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    target_entropy: float | None = None
    n_particles: int = 8
    latent_dim: int = 8
    head_hidden: int = 64
    latent_std: float | None = None
    aggregation: str = "mean"
    critic_latent: bool = False
    filter_window: int = 0
    filter_hidden: int = 64
    filter_aux: float = 0.0


class LogAlpha(nn.Module):
    """The temperature ``alpha = exp(log_alpha)`` as a module (one parameter)."""

    def __init__(self, init_alpha: float = 1.0) -> None:
        super().__init__()
        check(init_alpha > 0, "init_alpha", init_alpha, "a float > 0")
        self.log_alpha = nn.Parameter(torch.tensor(float(init_alpha)).log())

    def forward(self) -> Tensor:
        return self.log_alpha.exp()


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``module`` inside (gradients still flow through it)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


@dataclass
class _Draw:
    pi: PolicySample
    q_next: Tensor  # (batch,) min twin target value at (x', a')
    next_log_prob: Tensor  # (batch,)
    latents: Tensor | None  # (P, batch, latent_dim) for the critic at x, or None
    prediction: Tensor | None = None  # the filter's auxiliary loss, once the actor loss ran


class SAC:
    """Soft actor-critic on ``obs_dim``-dimensional observations and ``[-1, 1]^act_dim`` actions.

    Modules (all in :meth:`train_state`): ``actor``, ``critic``, ``critic_target``, ``alpha``;
    optimizers ``actor``, ``critic``, ``alpha`` (Adam, ``cfg.lr``). With ``cfg.filter_aux > 0``
    the actor holds ``obs_model`` too, the predictor of :meth:`prediction_loss` (stepped by the
    actor's optimizer).

    Args:
        obs_dim, act_dim: sizes. cfg: :class:`AgentConfig`. device: where the modules live.
        actor: use this policy instead of building one (it needs ``sample(obs, noise)``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: AgentConfig | None = None,
        device: str | torch.device = "cpu",
        actor: nn.Module | None = None,
    ) -> None:
        self.cfg = cfg = cfg or AgentConfig()
        for name in ("hidden", "depth"):
            v = getattr(cfg, name)
            check(isinstance(v, int) and v >= 1, name, v, "a positive integer")
        check(0 <= cfg.gamma <= 1, "gamma", cfg.gamma, "a float in [0, 1]")
        check(cfg.aggregation in AGGREGATIONS, "aggregation", cfg.aggregation, str(AGGREGATIONS))
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = torch.device(device)
        self.actor: Any = actor if actor is not None else self.build_actor()
        check(
            isinstance(cfg.filter_aux, (int, float)) and 0 <= cfg.filter_aux < float("inf"),
            "filter_aux",
            cfg.filter_aux,
            "a finite float >= 0",
        )
        if cfg.filter_aux > 0:
            check(cfg.filter_window > 0, "filter_aux", cfg.filter_aux,
                  "0 without the recurrent filter (filter_window = 0)")  # fmt: skip
            step_dim = obs_dim // cfg.filter_window
            self.raw_obs_dim = step_dim - act_dim - 1
            check(self.raw_obs_dim >= 1, "obs_dim", obs_dim,
                  f"windows of (obs, action, valid) steps, {cfg.filter_window} steps")  # fmt: skip
            self.actor.obs_model = relu_mlp(
                cfg.hidden + act_dim, self.raw_obs_dim, cfg.head_hidden, 1
            )
        self.actor = self.actor.to(self.device)
        self.critic = TwinCritic(self.critic_in_dim(), act_dim, cfg.hidden, cfg.depth)
        self.critic = self.critic.to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.alpha = LogAlpha(cfg.init_alpha).to(self.device)
        te = cfg.target_entropy
        self.target_entropy = float(-act_dim if te is None else te)

    def build_trunk(self) -> nn.Module | None:
        """The actor's recurrent trunk when ``cfg.filter_window > 0``, else None (an MLP)."""
        c = self.cfg
        check(
            isinstance(c.filter_window, int) and c.filter_window >= 0,
            "filter_window",
            c.filter_window,
            "an integer >= 0",
        )
        if c.filter_window == 0:
            return None
        return recurrent_trunk(self.obs_dim, c.filter_window, c.filter_hidden, c.hidden, c.depth)

    def build_actor(self) -> nn.Module:
        c = self.cfg
        return TanhGaussianPolicy(
            self.obs_dim, self.act_dim, c.hidden, c.depth, trunk=self.build_trunk()
        )

    def critic_in_dim(self) -> int:
        return self.obs_dim

    def critic_latents(self, obs: Tensor) -> Tensor | None:
        """Latent particles the critic is marginalized over at ``obs`` (None: plain critic)."""
        return None

    def modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "alpha": self.alpha,
        }

    def train_state(self, extra: dict[str, Any] | None = None) -> TrainState:
        """A :class:`~flowfields.engine.TrainState` with one Adam per actor / critic / alpha."""
        lr = self.cfg.lr
        opts = {
            k: torch.optim.Adam(getattr(self, k).parameters(), lr=lr, foreach=True)
            for k in ("actor", "critic", "alpha")
        }
        return TrainState(self.modules(), opts, extra=extra)

    # ------------------------------------------------------------------ losses
    def _draw(self, batch: Batch) -> _Draw:
        """The batch's random draws, action noise first (``(2, batch, act_dim)``)."""
        noise = torch.randn(
            (2, batch.obs.shape[0], self.act_dim), device=batch.obs.device, dtype=batch.obs.dtype
        )
        pi = self.actor.sample(batch.obs, noise[0])
        with torch.no_grad():
            nxt = self.actor.sample(batch.next_obs, noise[1])
            q = marginal_q(
                self.critic_target, batch.next_obs, nxt.action, self._lat(nxt), self.cfg.aggregation
            )
            latents = self.critic_latents(batch.obs)
        return _Draw(pi, q.min(0).values, nxt.log_prob, latents)

    def _lat(self, sample: PolicySample) -> Tensor | None:
        return sample.latents if self.cfg.critic_latent else None

    def alpha_loss(self, d: _Draw) -> Tensor:
        """``-log_alpha (log pi + target_entropy)`` averaged (its gradient raises alpha when the
        entropy ``-log pi`` is below the target)."""
        return -(self.alpha.log_alpha * (d.pi.log_prob.detach() + self.target_entropy)).mean()

    def critic_loss(self, batch: Batch, d: _Draw, alpha: Tensor) -> Tensor:
        """``0.5 sum_j mean (Q_j(x, a) - y)^2`` with the soft target
        ``y = r + gamma (1 - term) (Q'(x', a') - alpha log pi(a'|x'))``."""
        y = batch.reward + self.cfg.gamma * (1.0 - batch.terminated) * (
            d.q_next - alpha * d.next_log_prob
        )
        q = marginal_q(self.critic, batch.obs, batch.action, d.latents, self.cfg.aggregation)
        return 0.5 * (q - y.detach()).pow(2).mean(-1).sum()

    def actor_loss(self, batch: Batch, d: _Draw, alpha: Tensor) -> Tensor:
        """``mean(alpha log pi(a|x) - min_j Q_j(x, a))`` with ``a`` reparameterised."""
        lat = self._lat(d.pi)
        lat = lat.detach() if lat is not None else None
        with _frozen(self.critic):  # the actor's loss needs no critic weight gradients
            q = marginal_q(self.critic, batch.obs, d.pi.action, lat, self.cfg.aggregation)
        loss = (alpha * d.pi.log_prob - q.min(0).values).mean()
        if self.cfg.filter_aux > 0:
            d.prediction = self.prediction_loss(batch, d.pi)
            loss = loss + self.cfg.filter_aux * d.prediction
        return loss

    def prediction_loss(self, batch: Batch, pi: PolicySample) -> Tensor:
        """The recurrent filter's auxiliary loss: ``mean |g(h(x), a) - o'|^2`` over the batch and
        the observation's entries, with ``h(x)`` the actor's features on the window ``x``
        (``pi.features``, no extra filter pass), ``a`` the action taken (from the buffer) and
        ``o'`` the newest observation of the next window ``x'``: next-observation prediction,
        which uses only what the agent observes (no hidden state, no velocity).

        Shapes: ``batch.obs`` (B, L * step_dim), ``pi.features`` (B, hidden) -> ().
        """
        check(self.cfg.filter_aux > 0, "cfg.filter_aux", self.cfg.filter_aux,
              "> 0 (the agent has no observation model)")  # fmt: skip
        check(pi.features is not None, "pi.features", None, "the actor's trunk output")
        assert pi.features is not None
        b = batch.next_obs.shape[0]
        target = batch.next_obs.reshape(b, self.cfg.filter_window, -1)[:, -1, : self.raw_obs_dim]
        pred = self.actor.obs_model(torch.cat([pi.features, batch.action], dim=-1))
        return (pred - target).pow(2).mean()

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """The three losses at the current parameters, nothing stepped (for tests)."""
        d = self._draw(batch)
        alpha = self.alpha().detach()
        out = {
            "alpha_loss": self.alpha_loss(d),
            "critic_loss": self.critic_loss(batch, d, alpha),
            "actor_loss": self.actor_loss(batch, d, alpha),
        }
        if d.prediction is not None:
            out["prediction_loss"] = d.prediction
        return out

    def update(self, state: TrainState, batch: Batch) -> dict[str, Tensor]:
        """One gradient step of temperature, critic, actor (in that order), then the target."""
        d = self._draw(batch)
        out = {"alpha_loss": state.update("alpha", self.alpha_loss(d))}
        alpha = self.alpha().detach()
        out["critic_loss"] = state.update("critic", self.critic_loss(batch, d, alpha))
        out["actor_loss"] = state.update("actor", self.actor_loss(batch, d, alpha))
        if d.prediction is not None:
            out["prediction_loss"] = d.prediction.detach()
        polyak_update(self.critic_target, self.critic, self.cfg.tau)
        out["alpha"] = alpha
        out["entropy"] = -d.pi.log_prob.detach().mean()
        return out


class SMAC(SAC):
    """Stochastic Marginal Actor-Critic (Zhang et al., arXiv:2210.00999) on SAC.

    The policy is :class:`~flowfields.rl.LatentPolicy` with ``K = cfg.n_particles``; its
    ``log_prob`` is ``-H_K`` (:func:`~flowfields.rl.marginal_entropy_estimate`) in the
    temperature, critic-target and actor losses. With ``cfg.critic_latent`` the critic takes
    ``(x, s)`` and is aggregated over the K + 1 particles (``cfg.aggregation``).
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: AgentConfig | None = None,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        cfg = cfg or AgentConfig()
        check(
            isinstance(cfg.n_particles, int) and cfg.n_particles >= 0,
            "n_particles",
            cfg.n_particles,
            "an integer K >= 0",
        )
        super().__init__(obs_dim, act_dim, cfg, device)

    def build_actor(self) -> nn.Module:
        c = self.cfg
        return LatentPolicy(
            self.obs_dim,
            self.act_dim,
            c.hidden,
            c.depth,
            latent_dim=c.latent_dim,
            head_hidden=c.head_hidden,
            n_particles=c.n_particles,
            latent_std=c.latent_std,
            trunk=self.build_trunk(),
        )

    def critic_in_dim(self) -> int:
        return self.obs_dim + (self.cfg.latent_dim if self.cfg.critic_latent else 0)

    def critic_latents(self, obs: Tensor) -> Tensor | None:
        if not self.cfg.critic_latent:
            return None
        assert isinstance(self.actor, LatentPolicy)
        return self.actor.draw_latents(obs, self.cfg.n_particles + 1)
