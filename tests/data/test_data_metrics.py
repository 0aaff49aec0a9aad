"""Sliced Wasserstein and exact 1-D Wasserstein distances against closed forms, SciPy and POT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from flowfields.data import sliced_wasserstein, wasserstein_1d
from flowfields.errors import FlowfieldsError

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("n", "m"), [(300, 300), (300, 171), (64, 1000)])
def test_wasserstein_1d_matches_scipy_and_pot(n: int, m: int) -> None:
    ot = pytest.importorskip("ot")
    a = torch.randn(n, 3, generator=_gen(0), dtype=F64)
    b = 1.3 * torch.randn(m, 3, generator=_gen(1), dtype=F64) + 0.4
    w1 = wasserstein_1d(a, b, p=1)
    w2 = wasserstein_1d(a, b, p=2)
    for k in range(3):
        ref1 = scipy.stats.wasserstein_distance(a[:, k].numpy(), b[:, k].numpy())
        assert float(w1[k]) == pytest.approx(ref1, rel=1e-12)
        ref2 = ot.wasserstein_1d(a[:, k].numpy(), b[:, k].numpy(), p=2)  # W_2^2
        assert float(w2[k]) == pytest.approx(float(ref2), rel=1e-10)


def test_sliced_wasserstein_of_a_shift_is_its_closed_form() -> None:
    # y = x + s: every projection moves by theta . s, so SW_2^2 = E(theta . s)^2 = |s|^2 / d
    x = torch.randn(300, 2, generator=_gen(2), dtype=F64)
    for shift in (0.5, 1.0, 2.0):
        s = torch.tensor([shift, 0.0], dtype=F64)
        sw = float(sliced_wasserstein(x, x + s, n_projections=4000, generator=_gen(3)))
        # Monte Carlo over directions: (theta . s)^2 = shift^2 cos^2 phi has sd shift^2 / sqrt 8
        tol = 5 * (shift**2 / math.sqrt(8 * 4000)) / (2 * shift / math.sqrt(2))
        assert abs(sw - shift / math.sqrt(2)) < tol


def test_sliced_wasserstein_same_distribution_small_and_grows_with_shift() -> None:
    x = torch.randn(2000, 2, generator=_gen(4), dtype=F64)
    y = torch.randn(2000, 2, generator=_gen(5), dtype=F64)
    base = float(sliced_wasserstein(x, y, generator=_gen(6)))
    assert float(sliced_wasserstein(x, x, generator=_gen(6))) == 0.0
    assert base < 0.1  # finite-sample SW_2 of two N(0, I) samples of 2000 (about 0.06)
    values = [float(sliced_wasserstein(x, y + d, generator=_gen(6))) for d in (0.25, 0.5, 1.0)]
    assert base < values[0] < values[1] < values[2]


def test_sliced_wasserstein_shapes_and_bad_input() -> None:
    x = torch.randn(50, 1, 4, 4)
    y = torch.randn(70, 16)
    assert sliced_wasserstein(x, y, n_projections=8).shape == ()
    with pytest.raises(FlowfieldsError, match="y"):
        sliced_wasserstein(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(FlowfieldsError, match="NaN"):
        sliced_wasserstein(torch.full((5, 2), math.nan), torch.randn(5, 2))
    with pytest.raises(FlowfieldsError, match="n_projections"):
        sliced_wasserstein(torch.randn(5, 2), torch.randn(5, 2), n_projections=0)
    with pytest.raises(FlowfieldsError, match="x"):
        sliced_wasserstein(torch.randn(5), torch.randn(5, 2))
    assert np.isfinite(float(sliced_wasserstein(torch.randn(5, 2), torch.randn(9, 2), p=1.0)))
