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
- :class:`MovingDigit` / :func:`moving_digit`: an 8x8 scikit-learn digit (BSD-3-Clause data,
  shipped with scikit-learn) moving on a square canvas with piecewise-constant velocities,
  pauses (zero velocity) and bounces off the walls; sub-pixel positions are rendered by
  bilinear weights, so the motion is continuous at any frame rate. Frames ``(T, H, W)`` in
  ``[0, 1]``.
- :class:`ProceduralMocap` / :func:`random_mocap`: joint angles of a walking figure (hips,
  knees, ankles, shoulders, elbows; left and right half a cycle apart) as gait-like sums of
  sinusoids of one gait phase ``phi(t)``, whose cadence (cycles per unit time) is piecewise
  constant: speed changes and pauses (cadence zero: the pose holds). ``phi`` is integrated in
  closed form, so the motion is continuous at any frame rate and its complexity (gait
  cycles) is known.

Example:
    >>> content = random_jumps(3, 2, seed=0)
    >>> content.frames(32).shape, content.frames(512).shape
    ((32, 2), (512, 2))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from flowfields.errors import check

__all__ = [
    "MovingDigit",
    "PiecewiseConstant",
    "PiecewiseSinusoid",
    "ProceduralMocap",
    "frame_times",
    "moving_digit",
    "random_jumps",
    "random_mocap",
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


def _time_in_segments(change_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Time spent in each segment between 0 and ``t`` (segment ``j`` spans ``[c_{j-1}, c_j)``
    with ``c_{-1} = 0``, the last one unbounded): ``times`` (n,) -> (n, J + 1)."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    check(bool(np.isfinite(t).all()), "times", times, "finite times")
    lo = np.concatenate([[0.0], change_times])
    hi = np.concatenate([change_times, [np.inf]])
    return np.clip(t[:, None], lo[None, :], hi[None, :]) - lo[None, :]


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


def _reflect(u: np.ndarray, length: float) -> np.ndarray:
    """Fold unbounded positions into ``[0, length]`` (elastic bounces off both walls)."""
    r = np.mod(u, 2 * length)
    return np.where(r <= length, r, 2 * length - r)


@dataclass
class MovingDigit:
    """An ``8 x 8`` sprite on a ``canvas x canvas`` frame: top-left corner ``p(t)`` (row, col)
    = the reflection into ``[0, canvas - 8]`` of ``start + integral of velocity``, with
    ``velocities[j]`` (2,) on the ``j``-th segment between ``change_times``."""

    sprite: np.ndarray
    canvas: int
    start: np.ndarray
    change_times: np.ndarray
    velocities: np.ndarray

    def position(self, times: np.ndarray) -> np.ndarray:
        """Top-left corner at ``times`` (n,) -> (n, 2), continuous and piecewise linear."""
        spent = _time_in_segments(self.change_times, times)
        unfolded = self.start + spent @ self.velocities
        return _reflect(unfolded, float(self.canvas - self.sprite.shape[0]))

    def render(self, times: np.ndarray) -> np.ndarray:
        """Frames at ``times`` (n,) -> (n, canvas, canvas) float64 in [0, 1]."""
        pos = self.position(times)
        n, h = pos.shape[0], self.sprite.shape[0]
        out = np.zeros((n, self.canvas + 1, self.canvas + 1))
        base = np.floor(pos).astype(int)
        frac = pos - base
        for k in range(n):
            (r, c), (fr, fc) = base[k], frac[k]
            for dr, wr in ((0, 1 - fr), (1, fr)):
                for dc, wc in ((0, 1 - fc), (1, fc)):
                    out[k, r + dr : r + dr + h, c + dc : c + dc + h] += wr * wc * self.sprite
        return out[:, : self.canvas, : self.canvas]

    def frames(self, T: int) -> np.ndarray:
        """The video at the ``T`` frame times of [0, 1): (T, canvas, canvas)."""
        return self.render(frame_times(T))


def moving_digit(
    n_changes: int,
    *,
    seed: int = 0,
    canvas: int = 32,
    speed: float = 40.0,
    pause_prob: float = 0.25,
    min_gap: float = 0.08,
) -> MovingDigit:
    """A random digit moving with ``n_changes`` velocity changes on (0, 1): each segment's
    velocity has a uniform direction and speed in ``[speed/2, speed]`` pixels per unit time,
    or is a pause (zero) with probability ``pause_prob``."""
    from flowfields.data.images import load_digits

    check(isinstance(canvas, int) and canvas >= 9, "canvas", canvas, "an integer >= 9")
    rng = np.random.default_rng(seed)
    images = load_digits()
    assert isinstance(images, Tensor)
    sprite = images[int(rng.integers(images.shape[0])), 0].numpy().astype(np.float64) / 16.0
    c = _change_times(n_changes, rng, min_gap)
    angle = rng.uniform(0, 2 * np.pi, n_changes + 1)
    v = rng.uniform(speed / 2, speed, n_changes + 1)[:, None]
    vel = v * np.stack([np.sin(angle), np.cos(angle)], 1)
    vel[rng.uniform(size=n_changes + 1) < pause_prob] = 0.0
    start = rng.uniform(0, canvas - 8, 2)
    return MovingDigit(sprite, canvas, start, c, vel)


#: Joints of :class:`ProceduralMocap`, left side then right side.
MOCAP_JOINTS = (
    "hip_l", "knee_l", "ankle_l", "shoulder_l", "elbow_l",
    "hip_r", "knee_r", "ankle_r", "shoulder_r", "elbow_r",
)  # fmt: skip
# Gait template per joint of one side (radians): mean, (amplitude, phase) of harmonics 1 and 2.
# Loosely shaped on walking: hip ~ a sinusoid, knee with a strong second harmonic (the two
# flexions of a stride), shoulder opposite to the hip of the same side.
_GAIT = np.array([
    [0.10, 0.45, 0.0, 0.05, 0.5],
    [0.60, 0.40, -1.2, 0.30, 0.8],
    [0.00, 0.20, 1.0, 0.10, -0.6],
    [0.00, 0.30, np.pi, 0.03, 0.0],
    [0.40, 0.15, np.pi + 0.5, 0.05, 0.3],
])  # fmt: skip


@dataclass
class ProceduralMocap:
    """Joint angles ``x_j(t) = m_j + sum_h a_{jh} sin(h phi(t) + psi_{jh})`` (``h = 1, 2``)
    with the gait phase ``phi(t) = 2 pi (phase0 + integral_0^t cadence)``; ``cadence[k]``
    cycles per unit time on the ``k``-th segment between ``change_times`` (0: a pause).

    ``mean`` (J,), ``amp`` and ``shift`` (J, 2); ``J = len(MOCAP_JOINTS)``."""

    change_times: np.ndarray
    cadence: np.ndarray
    phase0: float
    mean: np.ndarray
    amp: np.ndarray
    shift: np.ndarray

    def cycles(self, times: np.ndarray) -> np.ndarray:
        """Gait cycles completed since ``t = 0`` at ``times`` (n,): ``integral cadence``."""
        spent = _time_in_segments(self.change_times, times)
        return spent @ self.cadence

    def render(self, times: np.ndarray) -> np.ndarray:
        """Joint angles at ``times`` (n,) -> (n, J), radians."""
        phi = 2 * np.pi * (self.phase0 + self.cycles(times))[:, None, None]
        h = np.array([1.0, 2.0])
        return self.mean + (self.amp * np.sin(h * phi + self.shift)).sum(-1)

    def frames(self, T: int) -> np.ndarray:
        """The joint angles at the ``T`` frame times of [0, 1): (T, J)."""
        return self.render(frame_times(T))


def random_mocap(
    n_changes: int,
    *,
    seed: int = 0,
    cadence: tuple[float, float] = (1.0, 3.0),
    pause_prob: float = 0.25,
    min_gap: float = 0.08,
) -> ProceduralMocap:
    """A walking figure with ``n_changes`` speed changes on (0, 1): each segment's cadence is
    uniform in ``cadence`` (cycles per unit time), or a pause (zero) with probability
    ``pause_prob``; the gait template is perturbed per figure (amplitudes x U(0.8, 1.2),
    means and phases + N(0, 0.1^2)), the right side half a cycle after the left."""
    check(
        len(cadence) == 2 and 0 <= cadence[0] <= cadence[1],
        "cadence",
        cadence,
        "(low, high), 0 <= low <= high",
    )
    check(0 <= pause_prob <= 1, "pause_prob", pause_prob, "a probability")
    rng = np.random.default_rng(seed)
    c = _change_times(n_changes, rng, min_gap)
    f = rng.uniform(cadence[0], cadence[1], n_changes + 1)
    f[rng.uniform(size=n_changes + 1) < pause_prob] = 0.0
    side = _GAIT.shape[0]
    mean = np.tile(_GAIT[:, 0], 2) + 0.1 * rng.standard_normal(2 * side)
    amp = np.tile(_GAIT[:, [1, 3]], (2, 1)) * rng.uniform(0.8, 1.2, (2 * side, 2))
    shift = np.tile(_GAIT[:, [2, 4]], (2, 1)) + 0.1 * rng.standard_normal((2 * side, 2))
    shift[side:] += np.pi * np.array([1.0, 2.0])  # half a cycle later: h * pi per harmonic
    return ProceduralMocap(c, f, float(rng.uniform()), mean, amp, shift)
