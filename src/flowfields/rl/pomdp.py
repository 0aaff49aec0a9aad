"""Partially observed variants of gymnasium tasks (needs the ``rl`` extra).

A module of its own so that the wrappers are module-level classes: the environment collector
pickles the environment into the train state's checkpoint. :class:`HistoryObservation` turns a
partial observation into the window of recent (observation, previous action) steps that the
recurrent filter :class:`~flowfields.rl.BeliefFilter` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["FlickerObservation", "HistoryObservation", "KeepObservation", "NoisyObservation"]


class KeepObservation(gym.ObservationWrapper):
    """Keep only the observation entries ``keep`` (e.g. drop velocities: a POMDP).

    Args:
        env: a gymnasium environment with a 1-D Box observation space.
        keep: indices of the entries to keep.
    """

    def __init__(self, env: Any, keep: Sequence[int]) -> None:
        super().__init__(env)
        self.keep = np.asarray(list(keep), dtype=np.int64)
        space: Any = env.observation_space
        self.observation_space = gym.spaces.Box(
            space.low[self.keep], space.high[self.keep], dtype=space.dtype
        )

    def observation(self, observation: Any) -> Any:
        return np.asarray(observation)[self.keep]


class FlickerObservation(gym.ObservationWrapper):
    """With probability ``p`` per step the observation is all zeros (a dropped frame).

    Draws from the environment's own ``np_random`` (seeded by ``reset(seed=...)`` and
    checkpointed by :class:`~flowfields.rl.EnvCollector`).
    """

    def __init__(self, env: Any, p: float) -> None:
        super().__init__(env)
        self.p = float(p)

    def observation(self, observation: Any) -> Any:
        obs = np.asarray(observation)
        return np.zeros_like(obs) if self.np_random.random() < self.p else obs


class NoisyObservation(gym.ObservationWrapper):
    """Adds ``N(0, sigma^2)`` noise to every observation entry (from the env's ``np_random``)."""

    def __init__(self, env: Any, sigma: float) -> None:
        super().__init__(env)
        self.sigma = float(sigma)

    def observation(self, observation: Any) -> Any:
        obs = np.asarray(observation)
        return (obs + self.sigma * self.np_random.standard_normal(obs.shape)).astype(obs.dtype)


class HistoryObservation(gym.Wrapper):
    """The observation becomes the last ``window`` steps ``(o_t, a_{t-1}, 1)``, oldest first.

    Each step is ``step_dim = obs_dim + act_dim + 1`` numbers: the observation, the action that
    led to it rescaled to ``[-1, 1]`` (zeros after a reset) and a validity flag. Steps before
    the episode's first are all zeros (flag 0), so :class:`~flowfields.rl.BeliefFilter` can skip
    them. The flattened window, shape ``(window * step_dim,)``, is what the agent and the replay
    buffer see.

    Args:
        env: a gymnasium environment with 1-D Box observation and action spaces.
        window: number of steps kept, ``>= 1``.
    """

    def __init__(self, env: Any, window: int) -> None:
        super().__init__(env)
        space: Any = env.observation_space
        act: Any = env.action_space
        self.window = int(window)
        self.obs_dim, self.act_dim = int(np.prod(space.shape)), int(np.prod(act.shape))
        self.step_dim = self.obs_dim + self.act_dim + 1
        self._low = np.asarray(act.low, np.float64).reshape(-1)
        self._high = np.asarray(act.high, np.float64).reshape(-1)
        self._steps = np.zeros((self.window, self.step_dim), np.float32)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self.window * self.step_dim,), np.float32
        )

    def _push(self, obs: Any, action: np.ndarray) -> np.ndarray:
        self._steps = np.roll(self._steps, -1, axis=0)
        self._steps[-1] = np.concatenate([np.asarray(obs, np.float32).reshape(-1), action, [1.0]])
        return self._steps.reshape(-1).copy()

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._steps = np.zeros_like(self._steps)
        return self._push(obs, np.zeros(self.act_dim, np.float32)), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        a = np.asarray(action, np.float64).reshape(-1)
        a = (2.0 * (a - self._low) / (self._high - self._low) - 1.0).astype(np.float32)
        return self._push(obs, a), reward, terminated, truncated, info
