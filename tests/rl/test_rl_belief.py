"""The recurrent belief filter and its observation window: the window's contents, padding
skipped exactly, a pickle round trip, and a filter that recovers the hidden velocity."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.rl import SAC, SMAC, AgentConfig, BeliefFilter, make_env


def test_history_window_contents() -> None:
    """The window holds (o_t, a_{t-1} in [-1, 1], 1) of the last L steps, zeros before the
    episode's start, equal to a record of the unwrapped task's observations and actions."""
    env = make_env("Pendulum-v1", hide_velocity=True, history=3)
    ref = make_env("Pendulum-v1", hide_velocity=True)
    assert env.observation_space.shape == (12,)
    w, _ = env.reset(seed=5)
    o, _ = ref.reset(seed=5)
    expect = np.zeros((3, 4), np.float32)
    expect[-1] = [*o, 0.0, 1.0]
    np.testing.assert_array_equal(w.reshape(3, 4), expect)
    rows = [expect[-1]]
    for a in (-2.0, 1.0, 0.5, 2.0):  # env-scale actions in [-2, 2]
        w, *_ = env.step(np.array([a], np.float32))
        o, *_ = ref.step(np.array([a], np.float32))
        rows.append(np.array([*o, a / 2.0, 1.0], np.float32))
        last = np.stack(([np.zeros(4, np.float32)] * 3 + rows)[-3:])
        np.testing.assert_allclose(w.reshape(3, 4), last, rtol=0, atol=1e-7)
    w, _ = env.reset(seed=6)
    assert np.all(w[:8] == 0) and w[-1] == 1.0


def test_history_pickle_round_trip_continues() -> None:
    env = make_env("Pendulum-v1", hide_velocity=True, history=4)
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.array([0.3], np.float32))
    other = pickle.loads(pickle.dumps(env))
    a = [env.step(np.array([-1.0], np.float32))[0] for _ in range(3)]
    b = [other.step(np.array([-1.0], np.float32))[0] for _ in range(3)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_filter_skips_padding_exactly() -> None:
    """A window with k valid steps after zero padding gives the state of the GRU cell run on
    those k steps alone (float64), and it differs from running the cell over the padding."""
    torch.manual_seed(0)
    f = BeliefFilter(step_dim=4, window=5, hidden=6).double()
    steps = torch.randn(3, 2, 4, dtype=torch.float64)
    steps[..., -1] = 1.0
    window = torch.cat([torch.zeros(3, 3, 4, dtype=torch.float64), steps], dim=1)
    h = torch.zeros(3, 6, dtype=torch.float64)
    for t in range(2):
        h = f.cell(steps[:, t], h)
    torch.testing.assert_close(f(window.reshape(3, 20)), h, rtol=1e-12, atol=1e-12)
    h_pad = torch.zeros(3, 6, dtype=torch.float64)
    for t in range(5):
        h_pad = f.cell(window[:, t], h_pad)
    assert not torch.allclose(h_pad, h)
    lead = f(window.reshape(1, 3, 20))  # leading batch dimensions are kept
    assert lead.shape == (1, 3, 6)
    with pytest.raises(FlowfieldsError, match="window"):
        f(torch.zeros(3, 19, dtype=torch.float64))


def _rollouts(n_steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows (velocity-free Pendulum, random actions), the last partial observation, and the
    true angular velocity at each step."""
    env = make_env("Pendulum-v1", hide_velocity=True, history=4)
    rng = np.random.default_rng(seed)
    w, _ = env.reset(seed=seed)
    xs, omegas = [], []
    for t in range(n_steps):
        w, _, term, trunc, _ = env.step(rng.uniform(-2, 2, 1).astype(np.float32))
        xs.append(w)
        omegas.append(env.unwrapped.state[1])
        if term or trunc:
            w, _ = env.reset(seed=seed + t + 1)
    x = torch.as_tensor(np.stack(xs))
    return x, x.reshape(-1, 4, 4)[:, -1, :2], torch.as_tensor(np.array(omegas), dtype=torch.float32)


def _fit_r2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xt, yt) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        idx = torch.randint(0, len(x), (256,), generator=g)
        loss = (model(x[idx]).squeeze(-1) - y[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        resid = (model(xt).squeeze(-1) - yt).pow(2).mean()
    return float(1 - resid / yt.var())


def test_filter_recovers_the_hidden_velocity() -> None:
    """Trained to regress the angular velocity, the filter over (cos, sin, a) windows explains
    most of its variance on held-out rollouts (R^2 >= 0.9); an MLP on the last observation alone
    cannot (R^2 <= 0.5): the velocity is what the partial observation hides."""
    torch.manual_seed(0)
    x, last, y = _rollouts(3000, seed=0)
    xt, last_t, yt = _rollouts(1000, seed=100)
    filt = nn.Sequential(BeliefFilter(4, 4, 32), nn.Linear(32, 1))
    mlp = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    r2_filter = _fit_r2(filt, x, y, xt, yt)
    r2_memoryless = _fit_r2(mlp, last, y, last_t, yt)
    assert r2_filter >= 0.9, r2_filter
    assert r2_memoryless <= 0.5, r2_memoryless


def test_agents_with_the_filter_and_bad_windows() -> None:
    cfg = AgentConfig(hidden=8, head_hidden=8, filter_window=3, filter_hidden=5)
    for agent in (SAC(12, 1, cfg), SMAC(12, 1, cfg)):
        assert isinstance(agent.actor.trunk[0], BeliefFilter)
        assert agent.actor.act(torch.zeros(2, 12)).shape == (2, 1)
    with pytest.raises(FlowfieldsError, match="filter_window"):
        SMAC(10, 1, cfg)  # 10 is no multiple of the window 3
    with pytest.raises(FlowfieldsError, match="filter_window"):
        SAC(12, 1, AgentConfig(filter_window=-1))
    with pytest.raises(FlowfieldsError, match="history"):
        make_env("Pendulum-v1", history=-2)


def _window_batch(n: int, seed: int):
    """A batch of real transitions of velocity-free Pendulum in windows of 3 steps."""
    from flowfields.rl import Batch, EnvCollector

    col = EnvCollector("Pendulum-v1", seed=seed, hide_velocity=True, history=3)
    g = torch.Generator().manual_seed(seed)
    rows = [col.step(torch.rand(1, generator=g) * 2 - 1) for _ in range(n)]
    obs, act, rew, nxt, term = zip(*rows)
    return Batch(
        obs=torch.stack(obs).double(),
        action=torch.stack(act).double(),
        reward=torch.tensor(rew, dtype=torch.float64),
        next_obs=torch.stack(nxt).double(),
        terminated=torch.tensor(term, dtype=torch.float64),
    )


@pytest.mark.parametrize("algo", [SAC, SMAC])
def test_prediction_loss_closed_form_and_gradients(algo) -> None:
    """The auxiliary loss is ``mean |g(h(x), a) - o'|^2`` with ``o'`` the newest (cos, sin) of
    the next window (read off the environment's own observation, float64 to 1e-12); the actor
    loss with weight w equals the plain actor loss plus w times it on the same draws; its
    gradient reaches every parameter of the filter and of the predictor, and none of the
    critic."""
    cfg = AgentConfig(hidden=8, head_hidden=8, filter_window=3, filter_hidden=5, filter_aux=0.7)
    torch.manual_seed(0)
    agent = algo(12, 1, cfg)
    agent.actor.double(), agent.critic.double(), agent.critic_target.double()
    agent.alpha.double()
    batch = _window_batch(16, seed=2)
    assert agent.raw_obs_dim == 2
    newest = batch.next_obs.reshape(16, 3, 4)[:, -1]
    np.testing.assert_array_equal(newest[:, 2:].numpy(), np.c_[batch.action, np.ones(16)])
    torch.manual_seed(1)
    out = agent.losses(batch)
    h = agent.actor.trunk(batch.obs)
    pred = agent.actor.obs_model(torch.cat([h, batch.action], -1))
    expect = (pred - newest[:, :2]).pow(2).mean()
    torch.testing.assert_close(out["prediction_loss"], expect, rtol=1e-12, atol=1e-12)
    agent.cfg = dataclasses.replace(cfg, filter_aux=0.0)
    torch.manual_seed(1)
    plain = agent.losses(batch)
    agent.cfg = cfg
    assert "prediction_loss" not in plain
    torch.testing.assert_close(
        out["actor_loss"], plain["actor_loss"] + 0.7 * expect, rtol=1e-12, atol=1e-12
    )
    agent.actor.zero_grad()
    agent.critic.zero_grad()
    torch.manual_seed(1)
    sample = agent.actor.sample(batch.obs)
    assert sample.features is not None and sample.features.shape == (16, 8)
    agent.prediction_loss(batch, sample).backward()
    filt = agent.actor.trunk[0]
    for p in [*filt.parameters(), *agent.actor.obs_model.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in agent.critic.parameters())


def test_prediction_loss_is_learned_and_bad_settings() -> None:
    """Updates with the auxiliary loss alone (actor's optimizer) lower it on held-out windows
    below 1% of the variance of the target (a constant predictor); bad settings raise."""
    cfg = AgentConfig(hidden=32, filter_window=3, filter_hidden=16, filter_aux=1.0, lr=3e-3)
    torch.manual_seed(0)
    agent = SAC(12, 1, cfg)
    train, test = _window_batch(600, seed=0), _window_batch(300, seed=7)
    train, test = (type(b)(**{k: v.float() for k, v in vars(b).items()}) for b in (train, test))
    opt = torch.optim.Adam(agent.actor.parameters(), lr=3e-3)
    for _ in range(300):
        loss = agent.prediction_loss(train, agent.actor.sample(train.obs))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        held_out = float(agent.prediction_loss(test, agent.actor.sample(test.obs)))
    target = test.next_obs.reshape(300, 3, 4)[:, -1, :2]
    assert held_out < 0.01 * float(target.var(0).mean()), held_out  # measured 5e-4 vs 0.47
    with pytest.raises(FlowfieldsError, match="filter_aux"):
        SAC(3, 1, AgentConfig(filter_aux=1.0))  # no filter
    with pytest.raises(FlowfieldsError, match="filter_aux"):
        SMAC(12, 1, AgentConfig(filter_window=3, filter_aux=-1.0))
    plain = SAC(12, 1, AgentConfig(hidden=8, filter_window=3))
    with pytest.raises(FlowfieldsError, match="filter_aux"):
        plain.prediction_loss(test, plain.actor.sample(test.obs))
