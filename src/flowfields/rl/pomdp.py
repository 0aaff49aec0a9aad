"""Partially observed variants of gymnasium tasks (needs the ``rl`` extra).

A module of its own so that the wrapper is a module-level class: the environment collector
pickles the environment into the train state's checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["FlickerObservation", "KeepObservation", "NoisyObservation"]


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
