"""The training loop of SAC / SMAC: the engine's :func:`~flowfields.engine.fit` with the
replay buffer and the environment in the train state.

One environment step and (after ``learning_starts`` steps of uniform random actions) one gradient
step per loop step, as stable-baselines3's ``train_freq=1, gradient_steps=1``.

Example:
    >>> from flowfields.engine import fit
    >>> run = build_run("sac", "Pendulum-v1", AgentConfig(hidden=16), seed=0, learning_starts=8,
    ...                 batch_size=8)
    >>> res = fit(run.state, run.step_fn, steps=20, progress=False)
    >>> len(run.buffer), sorted(run.state.history)[:2]
    (20, ['actor_loss', 'alpha'])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from flowfields.engine import TrainState, seed_everything
from flowfields.errors import check
from flowfields.rl.agents import SAC, SMAC, AgentConfig
from flowfields.rl.buffer import ReplayBuffer
from flowfields.rl.envs import EnvCollector, evaluate_policy

__all__ = ["ALGORITHMS", "RLRun", "build_run", "make_step_fn"]

#: Algorithm name -> agent class.
ALGORITHMS: dict[str, type[SAC]] = {"sac": SAC, "smac": SMAC}


def make_step_fn(
    agent: SAC,
    collector: EnvCollector,
    buffer: ReplayBuffer,
    *,
    batch_size: int = 256,
    learning_starts: int = 100,
    gradient_steps: int = 1,
) -> Callable[[TrainState, int], dict[str, Any]]:
    """``step_fn(state, step)``: act, store, and (after ``learning_starts``) update.

    Warm-up actions are uniform on [-1, 1] from torch's global RNG (checkpointed by ``fit``).
    """
    check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "int >= 1")
    check(
        isinstance(learning_starts, int) and learning_starts >= 1,
        "learning_starts",
        learning_starts,
        "an integer >= 1",
    )

    def step_fn(state: TrainState, step: int) -> dict[str, Any]:
        obs = collector.obs
        if step < learning_starts:
            action = torch.rand(agent.act_dim, device=obs.device) * 2 - 1
        else:
            action = agent.actor.act(obs[None])[0]
        buffer.add(*collector.step(action))
        out: dict[str, Any] = {}
        if step >= learning_starts:
            for _ in range(gradient_steps):
                out = agent.update(state, buffer.sample(batch_size))
        return out

    return step_fn


@dataclass
class RLRun:
    """Everything one training run needs: ``fit(run.state, run.step_fn, steps=...)``.

    Attributes:
        agent, collector, buffer: the parts (collector and buffer are ``state.extra``).
        state: the train state. step_fn: the loop step.
        eval_fn: ``eval_fn(state, step) -> {"return": mean, "return_std": std}`` of
            deterministic episodes on a separate, seeded environment.
    """

    agent: SAC
    collector: EnvCollector
    buffer: ReplayBuffer
    state: TrainState
    step_fn: Callable[[TrainState, int], dict[str, Any]]
    eval_fn: Callable[[TrainState, int], dict[str, float]]


def build_run(
    algo: str,
    env_id: str,
    cfg: AgentConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    buffer_size: int = 1_000_000,
    batch_size: int = 256,
    learning_starts: int = 100,
    eval_episodes: int = 5,
    hide_velocity: bool = False,
    flicker: float = 0.0,
    obs_noise: float = 0.0,
) -> RLRun:
    """Seed, make the environment, agent, buffer and train state of one run.

    Args:
        algo: ``"sac"`` or ``"smac"``. env_id: gymnasium id with a Box action space.
        cfg: agent hyper-parameters. seed: seeds torch / NumPy / random (networks) and the
            environment's first reset. buffer_size: replay capacity (capped at what fits).
        hide_velocity, flicker, obs_noise: POMDP variants (:func:`~flowfields.rl.make_env`).
            With ``cfg.filter_window = L > 0`` the observations are windows of the last L
            steps (``make_env(..., history=L)``), read by the agent's recurrent filter.

    Raises:
        FlowfieldsError: unknown ``algo`` or env id, a discrete action space, bad sizes.
    """
    check(algo in ALGORITHMS, "algo", algo, f"one of {list(ALGORITHMS)}")
    seed_everything(seed)
    window = cfg.filter_window if cfg is not None else 0
    obs_model: dict[str, Any] = {
        "hide_velocity": hide_velocity,
        "flicker": flicker,
        "obs_noise": obs_noise,
        "history": window,
    }
    collector = EnvCollector(env_id, seed, device, **obs_model)
    agent = ALGORITHMS[algo](collector.obs_dim, collector.act_dim, cfg, device)
    buffer = ReplayBuffer(collector.obs_dim, collector.act_dim, buffer_size, device)
    state = agent.train_state({"buffer": buffer, "env": collector})
    step_fn = make_step_fn(
        agent, collector, buffer, batch_size=batch_size, learning_starts=learning_starts
    )

    def eval_fn(state: TrainState, step: int) -> dict[str, float]:
        r = torch.tensor(
            evaluate_policy(agent.actor, env_id, eval_episodes, device=device, **obs_model)
        )
        return {"return": float(r.mean()), "return_std": float(r.std()) if len(r) > 1 else 0.0}

    return RLRun(agent, collector, buffer, state, step_fn, eval_fn)
