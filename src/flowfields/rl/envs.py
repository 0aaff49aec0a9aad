"""Gymnasium environments: checked construction, a checkpointable collector, evaluation.

The collector holds the environment itself in the train state (its pickled copy, and for MuJoCo
environments the simulator's ``qpos``/``qvel`` and the environment's NumPy RNG), so that a run
killed between checkpoints resumes with the same episode in the same state.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowfields.errors import FlowfieldsError, check, check_finite

__all__ = ["VELOCITY_FREE", "EnvCollector", "evaluate_policy", "make_env"]

#: env id -> observation indices kept by ``make_env(..., hide_velocity=True)`` (a POMDP).
VELOCITY_FREE: dict[str, tuple[int, ...]] = {
    "Pendulum-v1": (0, 1),  # cos theta, sin theta (angular velocity removed)
    "MountainCarContinuous-v0": (0,),  # position (velocity removed)
}


def make_env(
    env_id: str,
    *,
    hide_velocity: bool = False,
    flicker: float = 0.0,
    obs_noise: float = 0.0,
    history: int = 0,
) -> Any:
    """``gymnasium.make(env_id)`` with a continuous (Box) action space, checked.

    Args:
        env_id: a registered gymnasium id (``Pendulum-v1``, ``HalfCheetah-v5``, ...).
        hide_velocity: keep only the :data:`VELOCITY_FREE` observation entries (a POMDP).
        flicker: probability of a zeroed observation per step. obs_noise: standard deviation
            of Gaussian observation noise (both drawn from the environment's ``np_random``).
        history: with ``L >= 1`` the observation is the window of the last L steps
            (:class:`~flowfields.rl.pomdp.HistoryObservation`), the recurrent filter's input.

    Raises:
        FlowfieldsError: unknown id, a discrete action space, or no velocity-free variant.
    """
    import gymnasium as gym

    check(isinstance(env_id, str), "env_id", env_id, "a gymnasium environment id (str)")
    check(0.0 <= flicker < 1.0, "flicker", flicker, "a probability in [0, 1)")
    check(obs_noise >= 0.0, "obs_noise", obs_noise, "a standard deviation >= 0")
    check(isinstance(history, int) and history >= 0, "history", history, "an integer >= 0")
    try:
        env = gym.make(env_id)
    except gym.error.Error as err:
        raise FlowfieldsError(
            f"env_id: got {env_id!r}, expected a registered gymnasium id such as 'Pendulum-v1' "
            f"({type(err).__name__}: {err})."
        ) from None
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        env.close()
        raise FlowfieldsError(
            f"env_id: {env_id!r} has action space {space}, expected a continuous Box action "
            "space (SAC and SMAC act in R^d)."
        )
    if hide_velocity:
        check(env_id in VELOCITY_FREE, "env_id", env_id, f"one of {list(VELOCITY_FREE)}")
        from flowfields.rl.pomdp import KeepObservation

        env = KeepObservation(env, VELOCITY_FREE[env_id])
    if obs_noise > 0 or flicker > 0:
        from flowfields.rl.pomdp import FlickerObservation, NoisyObservation

        env = NoisyObservation(env, obs_noise) if obs_noise > 0 else env
        env = FlickerObservation(env, flicker) if flicker > 0 else env
    if history > 0:
        from flowfields.rl.pomdp import HistoryObservation

        env = HistoryObservation(env, history)
    return env


def _rescale(env: Any, action: Tensor) -> np.ndarray:
    """``[-1, 1]`` -> the env's ``[low, high]``."""
    low, high = env.action_space.low, env.action_space.high
    a = action.detach().cpu().double().numpy()
    return (low + (a + 1.0) * 0.5 * (high - low)).astype(env.action_space.dtype)


class EnvCollector:
    """One environment stepped by the training loop; a :class:`~flowfields.engine.Stateful`.

    Args:
        env_id: gymnasium id. seed: the first reset's seed. device: where observations go.
        hide_velocity, flicker, obs_noise, history: see :func:`make_env`.

    Attributes:
        obs: (obs_dim,) the current observation (float32 tensor on ``device``).
        episode_returns: undiscounted return of every finished episode, in order.
        episode_ends: total environment steps at the end of each of them.
    """

    def __init__(
        self,
        env_id: str,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        hide_velocity: bool = False,
        flicker: float = 0.0,
        obs_noise: float = 0.0,
        history: int = 0,
    ) -> None:
        self.env_id, self.device = env_id, torch.device(device)
        self.env = make_env(
            env_id,
            hide_velocity=hide_velocity,
            flicker=flicker,
            obs_noise=obs_noise,
            history=history,
        )
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.obs = self._tensor(self.env.reset(seed=int(seed))[0])
        self.episode_return, self.steps = 0.0, 0
        self.episode_returns: list[float] = []
        self.episode_ends: list[int] = []

    def _tensor(self, obs: Any) -> Tensor:
        t = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1), device=self.device)
        check_finite(t, f"observation of {self.env_id}")
        return t

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, float, Tensor, bool]:
        """Act with ``action`` in ``[-1, 1]`` (act_dim,); reset at the end of an episode.

        Returns:
            ``(obs, action, reward, next_obs, terminated)`` for the replay buffer (``next_obs``
            is the last observation of the episode, not the reset one).
        """
        obs = self.obs
        next_raw, reward, terminated, truncated, _ = self.env.step(_rescale(self.env, action))
        next_obs = self._tensor(next_raw)
        self.episode_return += float(reward)
        self.steps += 1
        if terminated or truncated:
            self.episode_returns.append(self.episode_return)
            self.episode_ends.append(self.steps)
            self.episode_return = 0.0
            self.obs = self._tensor(self.env.reset()[0])
        else:
            self.obs = next_obs
        return obs, action, float(reward), next_obs, bool(terminated)

    def state_dict(self) -> dict[str, Any]:
        """The environment (pickled; MuJoCo ``qpos``/``qvel`` and RNG kept) and counters."""
        base = self.env.unwrapped
        sim = None
        if hasattr(base, "set_state") and hasattr(base, "data"):
            sim = (base.data.qpos.copy(), base.data.qvel.copy())
        return {
            "env": pickle.dumps(self.env),
            "sim": sim,
            "np_random": base.np_random.bit_generator.state,
            "obs": self.obs.cpu(),
            "episode_return": self.episode_return,
            "steps": self.steps,
            "episode_returns": list(self.episode_returns),
            "episode_ends": list(self.episode_ends),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.env.close()
        self.env = pickle.loads(state["env"])  # our own checkpoint
        base = self.env.unwrapped
        if state["sim"] is not None:
            base.set_state(*state["sim"])
        base.np_random.bit_generator.state = state["np_random"]
        self.obs = state["obs"].to(self.device)
        self.episode_return, self.steps = float(state["episode_return"]), int(state["steps"])
        self.episode_returns = list(state["episode_returns"])
        self.episode_ends = list(state["episode_ends"])


@torch.no_grad()
def evaluate_policy(
    policy: Any,
    env_id: str,
    episodes: int = 5,
    seed: int = 10_000,
    *,
    hide_velocity: bool = False,
    flicker: float = 0.0,
    obs_noise: float = 0.0,
    history: int = 0,
    device: str | torch.device = "cpu",
) -> list[float]:
    """Undiscounted returns of ``episodes`` episodes with deterministic actions.

    Episode ``i`` starts from ``reset(seed=seed + i)``, so two policies are evaluated on the same
    initial states (the stable-baselines3 / CleanRL convention of a separate, seeded eval env).

    Args:
        policy: has ``act(obs (1, obs_dim), deterministic=True) -> (1, act_dim)`` in [-1, 1].
        hide_velocity, flicker, obs_noise, history: the observation model (:func:`make_env`).
    """
    check(isinstance(episodes, int) and episodes >= 1, "episodes", episodes, "an integer >= 1")
    env = make_env(
        env_id, hide_velocity=hide_velocity, flicker=flicker, obs_noise=obs_noise, history=history
    )
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            o = torch.as_tensor(np.asarray(obs, np.float32).reshape(1, -1), device=device)
            check_finite(o, f"observation of {env_id}")
            action = policy.act(o, deterministic=True)[0]
            obs, reward, terminated, truncated, _ = env.step(_rescale(env, action))
            total += float(reward)
            done = bool(terminated or truncated)
        returns.append(total)
    env.close()
    return returns
