"""expected_calibration_error: closed-form tables, a loop reference, calibrated draws, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowfields.data import expected_calibration_error
from flowfields.errors import FlowfieldsError

F64 = torch.float64


def _reference_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """A direct loop over bins (lo, hi] (the first also holding 0), for comparison."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        inside = (conf > lo) & (conf <= hi) if b > 0 else (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(
                (pred[inside] == labels[inside]).mean() - conf[inside].mean()
            )
    return total


def test_perfectly_calibrated_table_has_zero_ece() -> None:
    """10 points at confidence 0.7 with 7 right, 10 at 0.9 with 9 right: every bin exact."""
    probs = torch.tensor([[0.7, 0.3]] * 10 + [[0.1, 0.9]] * 10, dtype=F64)
    labels = torch.tensor([0] * 7 + [1] * 3 + [1] * 9 + [0] * 1)
    cal = expected_calibration_error(probs, labels, bins=15)
    assert float(cal.ece) < 1e-12
    assert int(cal.count.sum()) == 20 and int((cal.count > 0).sum()) == 2
    full = cal.count > 0
    torch.testing.assert_close(cal.accuracy[full], cal.confidence[full])


def test_confidently_wrong_table_has_ece_near_one() -> None:
    eps = 1e-6
    probs = torch.tensor([[1 - eps, eps / 2, eps / 2]] * 50, dtype=F64)
    cal = expected_calibration_error(probs, torch.full((50,), 2), bins=15)
    assert abs(float(cal.ece) - (1 - eps)) < 1e-12
    assert float(cal.accuracy[-1]) == 0.0 and int(cal.count[-1]) == 50


def test_matches_a_loop_reference_and_its_bins() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, size=500)
    for bins in (1, 7, 15):
        cal = expected_calibration_error(torch.tensor(probs), torch.tensor(labels), bins=bins)
        assert abs(float(cal.ece) - _reference_ece(probs, labels, bins)) < 1e-12
        assert cal.edges.shape == (bins + 1,) and cal.confidence.shape == (bins,)
    # a confidence exactly on an edge belongs to the bin below: (lo, hi]
    edge = torch.tensor([[0.6, 0.4]], dtype=F64)
    assert int(expected_calibration_error(edge, torch.tensor([0]), bins=5).count[2]) == 1


def test_labels_drawn_from_the_probabilities_are_calibrated() -> None:
    """Labels ~ Categorical(probs): ECE is sampling noise only, O(sqrt(bins / N)); the same
    probabilities sharpened (temperature 1/3) are over-confident by far more.

    N = 40000: the calibrated ECE measured 0.005-0.006 over seeds 0-3, so the bound 0.02
    leaves a wide margin; the sharpened one measured 0.25-0.26.
    """
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(40000, 4, generator=gen, dtype=F64)
    probs = torch.softmax(logits, -1)
    labels = torch.multinomial(probs, 1, generator=gen)[:, 0]
    assert float(expected_calibration_error(probs, labels).ece) < 0.02
    sharp = torch.softmax(3 * logits, -1)
    assert float(expected_calibration_error(sharp, labels).ece) > 0.1


def test_refuses_logits_and_bad_input() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.1]])
    with pytest.raises(FlowfieldsError, match="never logits"):
        expected_calibration_error(logits, torch.tensor([0, 1]))
    with pytest.raises(FlowfieldsError, match="probs"):
        expected_calibration_error(torch.tensor([[1.2, -0.2]]), torch.tensor([0]))
    with pytest.raises(FlowfieldsError, match="non-finite"):
        expected_calibration_error(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    good = torch.tensor([[0.5, 0.5]])
    with pytest.raises(FlowfieldsError, match="labels"):
        expected_calibration_error(good, torch.tensor([2]))
    with pytest.raises(FlowfieldsError, match="labels"):
        expected_calibration_error(good, torch.tensor([0.0]))
    with pytest.raises(FlowfieldsError, match="labels"):
        expected_calibration_error(good, torch.tensor([0, 1]))
    with pytest.raises(FlowfieldsError, match="bins"):
        expected_calibration_error(good, torch.tensor([0]), bins=0)
    with pytest.raises(FlowfieldsError, match="probs"):
        expected_calibration_error(torch.tensor([0.5, 0.5]), torch.tensor([0]))
