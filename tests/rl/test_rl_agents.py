"""SAC / SMAC losses: degenerate-latent equivalence, Polyak averaging, temperature gradient,
the marginalized critic."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.rl import (
    SAC,
    SMAC,
    AgentConfig,
    Batch,
    PolicySample,
    TwinCritic,
    marginal_q,
    polyak_update,
    tanh_gaussian_log_prob,
)


def _batch(n: int = 32, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, obs_dim, generator=g, dtype=torch.float64),
        action=torch.rand(n, act_dim, generator=g, dtype=torch.float64) * 2 - 1,
        reward=torch.randn(n, generator=g, dtype=torch.float64),
        next_obs=torch.randn(n, obs_dim, generator=g, dtype=torch.float64),
        terminated=(torch.rand(n, generator=g) < 0.2).double(),
    )


class _HeadAsTanhGaussian(nn.Module):
    """SAC's policy interface on a latent policy's head at the latent mean."""

    def __init__(self, latent_policy: nn.Module) -> None:
        super().__init__()
        self.lp = latent_policy

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> PolicySample:
        mu, log_std = self.lp(obs)
        u = mu + log_std.exp() * noise
        return PolicySample(torch.tanh(u), u, tanh_gaussian_log_prob(u, mu, log_std))


@pytest.mark.parametrize("filter_window", [0, 2])
def test_degenerate_smac_losses_equal_sac(filter_window: int) -> None:
    """latent_std = 0: SMAC's three losses equal SAC's with the same networks and draws (also
    on the recurrent filter's trunk, windows of 2 steps of 3 numbers)."""
    cfg = AgentConfig(hidden=16, n_particles=8, latent_std=0.0, init_alpha=0.3,
                      filter_window=filter_window, filter_hidden=7)  # fmt: skip
    obs_dim = 6 if filter_window else 3
    torch.manual_seed(0)
    smac = SMAC(obs_dim, 2, cfg)
    for m in smac.modules().values():
        m.double()
    sac = SAC(obs_dim, 2, cfg, actor=_HeadAsTanhGaussian(smac.actor))
    for k in ("critic", "critic_target", "alpha"):
        getattr(sac, k).double().load_state_dict(getattr(smac, k).state_dict())
    batch = _batch(obs_dim=obs_dim)
    torch.manual_seed(5)
    ls = smac.losses(batch)
    torch.manual_seed(5)
    lr = sac.losses(batch)
    for key in ("alpha_loss", "critic_loss", "actor_loss"):
        torch.testing.assert_close(ls[key], lr[key], rtol=1e-12, atol=1e-12)
    # with a learned (non-zero) latent variance the losses differ
    smac2 = SMAC(obs_dim, 2, dataclasses.replace(cfg, latent_std=0.5))
    smac2.actor.load_state_dict(smac.actor.state_dict())
    smac2.critic.load_state_dict(smac.critic.state_dict())
    for m in smac2.modules().values():
        m.double()
    torch.manual_seed(5)
    assert not torch.allclose(smac2.losses(batch)["actor_loss"], lr["actor_loss"])


def test_polyak_update_closed_form() -> None:
    torch.manual_seed(0)
    src, tgt = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in tgt.parameters()]
    polyak_update(tgt, src, 0.3)
    for b, p, s in zip(before, tgt.parameters(), src.parameters()):
        torch.testing.assert_close(p, 0.7 * b + 0.3 * s, rtol=0, atol=1e-7)
    polyak_update(tgt, src, 1.0)
    for p, s in zip(tgt.parameters(), src.parameters()):
        torch.testing.assert_close(p, s, rtol=0, atol=0)
    with pytest.raises(FlowfieldsError, match="tau"):
        polyak_update(tgt, src, 1.5)


@pytest.mark.parametrize("entropy_gap", [-0.5, 0.5])
def test_temperature_gradient_sign(entropy_gap: float) -> None:
    """Entropy below the target (gap < 0): the gradient of the alpha loss w.r.t. log alpha is
    negative, so gradient descent raises alpha; above the target it lowers it."""
    agent = SAC(3, 2, AgentConfig(hidden=8))
    te = agent.target_entropy
    assert te == -2.0
    log_prob = torch.full((16,), -(te + entropy_gap))  # entropy -log_prob = te + gap

    class D:
        pi = PolicySample(torch.zeros(16, 2), torch.zeros(16, 2), log_prob)

    loss = agent.alpha_loss(D())  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(loss, agent.alpha.log_alpha)
    assert float(grad) == pytest.approx(entropy_gap)
    assert (float(grad) < 0) == (entropy_gap < 0)


def test_update_steps_every_optimizer_and_the_target() -> None:
    torch.manual_seed(0)
    agent = SMAC(3, 2, AgentConfig(hidden=16, n_particles=4, critic_latent=True))
    state = agent.train_state()
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in agent.modules().items()}
    batch = _batch()
    batch = Batch(**{k: v.float() for k, v in vars(batch).items()})
    out = agent.update(state, batch)
    assert set(out) >= {"alpha_loss", "critic_loss", "actor_loss", "alpha", "entropy"}
    for k, m in agent.modules().items():
        changed = any(not torch.equal(b, p) for b, p in zip(before[k], m.parameters()))
        assert changed, k


def test_marginal_critic() -> None:
    """Identical particles: every aggregation equals the critic at that latent; distinct
    particles: min <= mean <= logmeanexp."""
    torch.manual_seed(0)
    critic = TwinCritic(3 + 2, 1, hidden=16).double()
    obs, act = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, 1, dtype=torch.float64)
    s = torch.randn(5, 2, dtype=torch.float64)
    direct = critic(torch.cat([obs, s], -1), act)
    same = s.expand(4, 5, 2)
    for how in ("min", "mean", "logmeanexp"):
        torch.testing.assert_close(marginal_q(critic, obs, act, same, how), direct)
    lat = torch.randn(6, 5, 2, dtype=torch.float64)
    lo, mid, hi = (marginal_q(critic, obs, act, lat, h) for h in ("min", "mean", "logmeanexp"))
    assert lo.shape == (2, 5) and bool((lo <= mid).all() and (mid <= hi).all())


def test_bad_agent_config() -> None:
    with pytest.raises(FlowfieldsError, match="n_particles"):
        SMAC(3, 1, AgentConfig(n_particles=-1))
    with pytest.raises(FlowfieldsError, match="aggregation"):
        SAC(3, 1, AgentConfig(aggregation="max"))
    with pytest.raises(FlowfieldsError, match="gamma"):
        SAC(3, 1, AgentConfig(gamma=1.5))
