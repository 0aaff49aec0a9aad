"""Continuous-time sequences generated in code, renderable at any frame rate.

Each generator returns *content*: an object whose ``render(times)`` evaluates the underlying
continuous-time signal at any times (``(n,) -> (n, D)`` float64), and ``frames(T)`` at the
``T`` frame times ``i / T`` of the unit interval, so the same content can be shown at 32 or
512 frames (Chen et al., arXiv:2212.13659: rate should follow the content, not the frame
rate). Change points are known (``change_times``). Generated here; no licence applies.

- :class:`PiecewiseConstant` / :func:`random_jumps`: a jump process, constant between change
  points.
- :class:`PiecewiseSinusoid` / :func:`random_sinusoids`: a sinusoid per segment (amplitude,
  frequency, phase and offset change at each change point).

Example:
    >>> content = random_jumps(3, 2, seed=0)
    >>> content.frames(32).shape, content.frames(512).shape
    ((32, 2), (512, 2))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowfields.errors import check

__all__ = [
    "PiecewiseConstant",
    "PiecewiseSinusoid",
    "frame_times",
    "random_jumps",
    "random_sinusoids",
]


def frame_times(T: int) -> np.ndarray:
    """The ``T`` frame times ``i / T``, ``i = 0 .. T-1`` (float64)."""
    check(isinstance(T, int) and T >= 1, "T", T, "a positive integer number of frames")
    return np.arange(T, dtype=np.float64) / T


def _segment(change_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    check(bool(np.isfinite(t).all()), "times", times, "finite times")
    return np.searchsorted(change_times, t, side="right")


def _change_times(n_changes: int, rng: np.random.Generator, min_gap: float) -> np.ndarray:
    check(isinstance(n_changes, int) and n_changes >= 0, "n_changes", n_changes, "an integer >= 0")
    check(n_changes * min_gap < 0.9, "n_changes", n_changes, f"fewer than {0.9 / min_gap:.0f}")
    while True:  # rejection: change points at least min_gap apart and from the ends
        c = np.sort(rng.uniform(min_gap, 1.0 - min_gap, n_changes))
        if n_changes < 2 or np.diff(c).min() >= min_gap:
            return c


@dataclass
class PiecewiseConstant:
    """``x(t) = values[j]`` on the ``j``-th segment between ``change_times`` (sorted, (J,));
    ``values``: (J + 1, D)."""

    change_times: np.ndarray
    values: np.ndarray

    def render(self, times: np.ndarray) -> np.ndarray:
        """The signal at ``times`` (n,) -> (n, D)."""
        return self.values[_segment(self.change_times, times)]

    def frames(self, T: int) -> np.ndarray:
        """The signal at the ``T`` frame times of [0, 1): (T, D)."""
        return self.render(frame_times(T))


@dataclass
class PiecewiseSinusoid:
    """``x_d(t) = offset + amp sin(2 pi freq t + phase)`` with per-segment parameters, each
    (J + 1, D)."""

    change_times: np.ndarray
    offset: np.ndarray
    amp: np.ndarray
    freq: np.ndarray
    phase: np.ndarray

    def render(self, times: np.ndarray) -> np.ndarray:
        """The signal at ``times`` (n,) -> (n, D)."""
        j = _segment(self.change_times, times)
        t = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        return self.offset[j] + self.amp[j] * np.sin(2 * np.pi * self.freq[j] * t + self.phase[j])

    def frames(self, T: int) -> np.ndarray:
        """The signal at the ``T`` frame times of [0, 1): (T, D)."""
        return self.render(frame_times(T))


def random_jumps(
    n_changes: int, dim: int, *, seed: int = 0, scale: float = 1.0, min_gap: float = 0.04
) -> PiecewiseConstant:
    """A jump process with ``n_changes`` change points on (0, 1), levels ``N(0, scale^2)``."""
    check(isinstance(dim, int) and dim >= 1, "dim", dim, "a positive integer")
    rng = np.random.default_rng(seed)
    c = _change_times(n_changes, rng, min_gap)
    return PiecewiseConstant(c, scale * rng.standard_normal((n_changes + 1, dim)))


def random_sinusoids(
    n_changes: int, dim: int, *, seed: int = 0, max_freq: float = 2.0, min_gap: float = 0.04
) -> PiecewiseSinusoid:
    """Piecewise sinusoids: ``n_changes`` change points, amplitudes U(0.2, 1), frequencies
    U(0, max_freq) per unit time, phases U(0, 2 pi), offsets N(0, 0.5^2)."""
    check(isinstance(dim, int) and dim >= 1, "dim", dim, "a positive integer")
    rng = np.random.default_rng(seed)
    c = _change_times(n_changes, rng, min_gap)
    shape = (n_changes + 1, dim)
    return PiecewiseSinusoid(
        c,
        offset=0.5 * rng.standard_normal(shape),
        amp=rng.uniform(0.2, 1.0, shape),
        freq=rng.uniform(0.0, max_freq, shape),
        phase=rng.uniform(0.0, 2 * np.pi, shape),
    )
