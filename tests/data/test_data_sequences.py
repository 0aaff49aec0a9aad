"""Continuous-time sequence generators: same content at any frame rate, known change points."""

from __future__ import annotations

import numpy as np
import pytest

from flowfields.data.sequences import (
    MOCAP_JOINTS,
    frame_times,
    moving_digit,
    random_jumps,
    random_mocap,
    random_sinusoids,
)
from flowfields.errors import FlowfieldsError


def test_jumps_are_constant_between_change_points_at_any_rate() -> None:
    c = random_jumps(5, 3, seed=1)
    assert c.change_times.shape == (5,) and np.all(np.diff(c.change_times) >= 0.04)
    for T in (32, 512):
        x = c.frames(T)
        t = frame_times(T)
        seg = np.searchsorted(c.change_times, t, side="right")
        np.testing.assert_array_equal(x, c.values[seg])
    # the 32-frame video is every 16th frame of the 512-frame one
    np.testing.assert_array_equal(c.frames(32), c.frames(512)[::16])
    assert len(np.unique(c.frames(512), axis=0)) == 6


def test_sinusoids_follow_their_formula() -> None:
    c = random_sinusoids(2, 2, seed=3)
    t = np.array([0.0, 0.3, 0.99])
    j = np.searchsorted(c.change_times, t, side="right")
    ref = c.offset[j] + c.amp[j] * np.sin(2 * np.pi * c.freq[j] * t[:, None] + c.phase[j])
    np.testing.assert_allclose(c.render(t), ref, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(c.frames(64), c.frames(128)[::2])


def test_moving_digit_moves_continuously_and_keeps_its_mass() -> None:
    c = moving_digit(4, seed=2, canvas=20, speed=30.0)
    dense = np.linspace(0, 1, 2001)
    pos = c.position(dense)
    assert pos.min() >= 0 and pos.max() <= 12 + 1e-12  # inside the canvas
    step = np.abs(np.diff(pos, axis=0)).max()
    assert step <= 30.0 * (dense[1] - dense[0]) * 1.0001  # |velocity| <= speed
    frames = c.frames(64)
    assert frames.shape == (64, 20, 20) and frames.min() >= 0 and frames.max() <= 1 + 1e-12
    np.testing.assert_allclose(frames.sum((1, 2)), c.sprite.sum(), rtol=1e-12)
    np.testing.assert_array_equal(c.frames(32), c.frames(64)[::2])


def test_mocap_walks_with_its_cadence_and_holds_its_pose_in_pauses() -> None:
    c = random_mocap(5, seed=4, pause_prob=0.5)
    assert (c.cadence == 0).any() and (c.cadence > 0).any()
    np.testing.assert_array_equal(c.frames(32), c.frames(512)[::16])
    x = c.render(np.linspace(0, 1, 4001))
    assert x.shape == (4001, len(MOCAP_JOINTS))
    # continuous: no step larger than the fastest joint speed allows (|x'| <= 2 pi f sum h a_h)
    speed = 2 * np.pi * c.cadence.max() * (c.amp * np.array([1.0, 2.0])).sum(-1).max()
    assert np.abs(np.diff(x, axis=0)).max() <= speed / 4000 * 1.0001
    edges = np.concatenate([[0.0], c.change_times, [1.0]])
    for k, f in enumerate(c.cadence):  # inside each segment
        a, b = edges[k] + 1e-3, edges[k + 1] - 1e-3
        if f == 0:  # a pause: the pose holds
            np.testing.assert_allclose(c.render(np.array([a])), c.render(np.array([b])), atol=0)
        elif (b - a) * f > 1.0:  # walking: one gait cycle later, the same pose
            np.testing.assert_allclose(
                c.render(np.array([a + 1 / f])), c.render(np.array([a])), atol=1e-12
            )
    np.testing.assert_allclose(c.cycles(np.array([1.0])), np.diff(edges) @ c.cadence, rtol=1e-12)


def test_bad_input_raises() -> None:
    with pytest.raises(FlowfieldsError, match="T"):
        frame_times(0)
    with pytest.raises(FlowfieldsError, match="n_changes"):
        random_jumps(-1, 2)
    with pytest.raises(FlowfieldsError, match="dim"):
        random_sinusoids(1, 0)
    with pytest.raises(FlowfieldsError, match="times"):
        random_jumps(1, 1).render(np.array([0.1, np.nan]))
    with pytest.raises(FlowfieldsError, match="canvas"):
        moving_digit(1, canvas=8)
    with pytest.raises(FlowfieldsError, match="cadence"):
        random_mocap(1, cadence=(2.0, 1.0))
