"""Replay buffer, environments, and training through the engine: seeded reproducibility and a
SIGKILL + resume that continues bit for bit."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from flowfields.engine import fit, load_checkpoint
from flowfields.errors import FlowfieldsError
from flowfields.rl import AgentConfig, EnvCollector, ReplayBuffer, build_run, evaluate_policy

TINY = AgentConfig(hidden=16, n_particles=4, lr=1e-3)
RUN = {"learning_starts": 10, "batch_size": 16, "buffer_size": 1000}


def test_buffer_round_trip_and_wrap() -> None:
    buf = ReplayBuffer(3, 1, capacity=5)
    for i in range(7):
        buf.add(torch.full((3,), float(i)), torch.full((1,), i / 10), i, torch.ones(3), i == 6)
    assert len(buf) == 5 and buf.pos == 2
    assert sorted(buf.data["reward"].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    other = ReplayBuffer(3, 1, capacity=5)
    other.load_state_dict(buf.state_dict())
    torch.manual_seed(0)
    a = buf.sample(8)
    torch.manual_seed(0)
    b = other.sample(8)
    for k in vars(a):
        assert torch.equal(getattr(a, k), getattr(b, k))
    with pytest.raises(FlowfieldsError, match="capacity"):
        ReplayBuffer(3, 1, capacity=4).load_state_dict(buf.state_dict())
    with pytest.raises(FlowfieldsError, match="buffer"):
        ReplayBuffer(3, 1, capacity=4).sample(2)


def test_env_errors() -> None:
    with pytest.raises(FlowfieldsError, match="NoSuchEnv-v0"):
        EnvCollector("NoSuchEnv-v0")
    with pytest.raises(FlowfieldsError, match="continuous Box"):
        EnvCollector("CartPole-v1")
    with pytest.raises(FlowfieldsError, match="algo"):
        build_run("ppo", "Pendulum-v1")
    col = EnvCollector("Pendulum-v1", seed=0)
    col.env = gym.wrappers.TransformObservation(
        col.env, lambda o: o * np.nan, col.env.observation_space
    )
    with pytest.raises(FlowfieldsError, match="non-finite"):
        col.step(torch.zeros(1))


def test_hidden_velocity_and_deterministic_evaluation() -> None:
    col = EnvCollector("Pendulum-v1", seed=0, hide_velocity=True)
    assert col.obs_dim == 2
    run = build_run("smac", "Pendulum-v1", TINY, seed=0, **RUN)
    r1 = evaluate_policy(run.agent.actor, "Pendulum-v1", 2)
    r2 = evaluate_policy(run.agent.actor, "Pendulum-v1", 2)
    assert r1 == r2 and len(r1) == 2 and all(-2000 < r < 0 for r in r1)


def _params(run) -> list[torch.Tensor]:
    return [p.detach().clone() for m in run.agent.modules().values() for p in m.parameters()]


@pytest.mark.parametrize(
    ("algo", "window", "aux"),
    [("sac", 0, 0.0), ("smac", 0, 0.0), ("smac", 3, 0.0), ("sac", 3, 1.0)],
)
def test_seeded_runs_reproduce(algo: str, window: int, aux: float) -> None:
    """Same seed: identical weights and losses (window 3: velocity-free Pendulum through the
    recurrent filter; aux: with its next-observation prediction loss); another seed: different
    weights."""
    cfg = dataclasses.replace(TINY, filter_window=window, filter_hidden=8, filter_aux=aux)
    obs = {"hide_velocity": bool(window)}
    runs = []
    for _ in range(2):
        run = build_run(algo, "Pendulum-v1", cfg, seed=3, **RUN, **obs)
        fit(run.state, run.step_fn, steps=40, progress=False, seed=3)
        runs.append(run)
    assert runs[0].collector.obs_dim == (12 if window else 3)
    for a, b in zip(_params(runs[0]), _params(runs[1])):
        assert torch.equal(a, b)
    assert runs[0].state.history == runs[1].state.history
    assert ("prediction_loss" in runs[0].state.history) == (aux > 0)
    other = build_run(algo, "Pendulum-v1", cfg, seed=4, **RUN, **obs)
    fit(other.state, other.step_fn, steps=40, progress=False, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(_params(runs[0]), _params(other)))


#: The resume test's settings: plain SMAC, and SMAC on the recurrent filter with its auxiliary
#: loss on velocity-free Pendulum with flicker (the dropped frames draw from the environment's
#: RNG, which the checkpoint must restore).
RESUME_CASES = {
    "plain": ({}, {}),
    "filter": (
        {"filter_window": 3, "filter_hidden": 8, "filter_aux": 1.0},
        {"hide_velocity": True, "flicker": 0.3},
    ),
}

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from flowfields.engine import fit
    from flowfields.rl import AgentConfig, build_run
    cfg, obs = eval(sys.argv[2])
    run = build_run("smac", "Pendulum-v1", AgentConfig(hidden=16, n_particles=4, lr=1e-3, **cfg),
                    seed=0, learning_starts=10, batch_size=16, buffer_size=1000, **obs)
    step_fn = run.step_fn
    def killing(state, step):
        if step == 37:
            os.kill(os.getpid(), signal.SIGKILL)
        return step_fn(state, step)
    fit(run.state, killing, steps=60, checkpoint=sys.argv[1], checkpoint_every=15,
        progress=False, seed=0)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_sigkill_and_resume_continues_bit_for_bit(tmp_path: Path, case: str) -> None:
    """A run killed at step 37 (last checkpoint at 30), resumed to 60, equals an uninterrupted
    run: every weight (the filter and its predictor too), the optimizers' moments, the whole
    replay buffer, the environment (its observation and RNG) and the loss history."""
    cfg_kw, obs_kw = RESUME_CASES[case]
    cfg = dataclasses.replace(TINY, **cfg_kw)
    ckpt = tmp_path / "train.pt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    argv = [sys.executable, "-c", SCRIPT, str(ckpt), repr((cfg_kw, obs_kw))]
    proc = subprocess.run(argv, env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL and ckpt.is_file()
    assert load_checkpoint(ckpt)["step"] == 30
    resumed = build_run("smac", "Pendulum-v1", cfg, seed=0, **RUN, **obs_kw)
    fit(resumed.state, resumed.step_fn, steps=60, checkpoint=ckpt, resume=True, progress=False)
    straight = build_run("smac", "Pendulum-v1", cfg, seed=0, **RUN, **obs_kw)
    fit(straight.state, straight.step_fn, steps=60, progress=False, seed=0)
    assert resumed.state.step == 60
    assert hasattr(resumed.agent.actor, "obs_model") == bool(cfg.filter_aux)
    for a, b in zip(_params(resumed), _params(straight)):
        assert torch.equal(a, b)
    for name, opt in resumed.state.optimizers.items():
        other = straight.state.optimizers[name].state_dict()["state"]
        for k, st in opt.state_dict()["state"].items():
            assert all(torch.equal(st[f], other[k][f]) for f in ("exp_avg", "exp_avg_sq"))
    assert resumed.state.history == straight.state.history
    assert len(resumed.buffer) == len(straight.buffer) == 60
    for k, v in resumed.buffer.data.items():
        assert torch.equal(v, straight.buffer.data[k]), k
    assert torch.equal(resumed.collector.obs, straight.collector.obs)
    rng = [r.collector.env.unwrapped.np_random.bit_generator.state for r in (resumed, straight)]
    assert rng[0] == rng[1]


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "HalfCheetah-v5"])
def test_collector_state_round_trip(env_id: str) -> None:
    """Saving the collector mid-episode and loading it into a fresh one continues the episode
    identically (MuJoCo: qpos / qvel and the RNG restored after unpickling)."""
    g = torch.Generator().manual_seed(0)
    col = EnvCollector(env_id, seed=1)
    actions = torch.rand(8, col.act_dim, generator=g) * 2 - 1
    for a in actions[:5]:
        col.step(a)
    saved = col.state_dict()
    ahead = [col.step(a)[3] for a in actions[5:]]
    other = EnvCollector(env_id, seed=99)
    other.load_state_dict(saved)
    again = [other.step(a)[3] for a in actions[5:]]
    for x, y in zip(ahead, again):
        assert torch.equal(x, y)
    assert other.steps == col.steps == 8


def test_flicker_and_noise_observations() -> None:
    """Flicker zeroes about p of the observations (4-s.e. binomial test); noise has the
    requested standard deviation against the noiseless observation of the same state; both
    are reproducible from the reset seed; bad settings raise."""
    col = EnvCollector("Pendulum-v1", seed=0, flicker=0.3)
    zeros = sum(bool((col.step(torch.zeros(1))[3] == 0).all()) for _ in range(2000))
    assert abs(zeros / 2000 - 0.3) < 4 * (0.3 * 0.7 / 2000) ** 0.5
    clean = EnvCollector("Pendulum-v1", seed=0)
    noisy = EnvCollector("Pendulum-v1", seed=0, obs_noise=0.1)
    diffs = []
    for _ in range(199):  # within the first episode: the same states (the noise does not act)
        diffs.append(noisy.step(torch.zeros(1))[3] - clean.step(torch.zeros(1))[3])
    d = torch.stack(diffs)
    assert abs(float(d.std()) / 0.1 - 1) < 4 * (1 / (2 * d.numel())) ** 0.5
    again = EnvCollector("Pendulum-v1", seed=0, flicker=0.3)
    first = [again.step(torch.zeros(1))[3] for _ in range(50)]
    again2 = EnvCollector("Pendulum-v1", seed=0, flicker=0.3)
    assert all(torch.equal(a, again2.step(torch.zeros(1))[3]) for a in first)
    with pytest.raises(FlowfieldsError, match="flicker"):
        EnvCollector("Pendulum-v1", flicker=1.0)
    with pytest.raises(FlowfieldsError, match="obs_noise"):
        EnvCollector("Pendulum-v1", obs_noise=-1.0)
