"""Grid PMFs: normalised, exact entropy, permutation keeps the entropy, sampling frequencies."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.voronoi import PMF_NAMES, entropy_bits, grid_pmf, sample_pmf


@pytest.mark.parametrize("name", PMF_NAMES)
def test_pmfs_are_normalised_and_permutation_keeps_entropy(name) -> None:
    p = grid_pmf(name, 12)
    assert p.shape == (12, 12) and p.dtype == torch.float64 and bool((p >= 0).all())
    assert abs(float(p.sum()) - 1) < 1e-12
    q = grid_pmf(f"perm-{name}", 12)
    assert abs(entropy_bits(q) - entropy_bits(p)) < 1e-12
    assert not torch.equal(p, q)
    torch.testing.assert_close(q.sum(1).sort().values, p.sum(1).sort().values)


def test_entropy_closed_forms() -> None:
    assert abs(entropy_bits(torch.full((4, 4), 1 / 16, dtype=torch.float64)) - 4.0) < 1e-12
    assert entropy_bits(torch.tensor([[1.0, 0.0], [0.0, 0.0]])) == 0.0


def test_sample_pmf_frequencies() -> None:
    """Counts of 40000 draws within 4.5 binomial standard errors of n P (false-alarm ~1e-3
    over the 64 cells)."""
    p = grid_pmf("clusters", 8)
    x = sample_pmf(p, 40000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(x[:, 0] * 8 + x[:, 1], minlength=64).double()
    exp = 40000 * p.reshape(-1)
    assert ((counts - exp).abs() <= 4.5 * (exp * (1 - p.reshape(-1))).sqrt() + 1e-9).all()
    with pytest.raises(FlowfieldsError, match="name"):
        grid_pmf("moons", 8)
    with pytest.raises(FlowfieldsError, match="K"):
        grid_pmf("cross", 1)
    assert math.isfinite(entropy_bits(p))


def test_bad_pmfs_raise() -> None:
    from flowfields.voronoi import sample_table

    for bad, what in (
        (torch.tensor([0.5, -0.5, 1.0]), ">= 0"),
        (torch.tensor([0.5, 0.7]), "summing to 1.2"),
        (torch.tensor([0.5, float("nan")]), ">= 0"),
    ):
        for fn in (entropy_bits, lambda p: sample_table(p, 3)):
            with pytest.raises(FlowfieldsError, match=f"pmf: .*{what}"):
                fn(bad)
    with pytest.raises(FlowfieldsError, match="2-D"):
        sample_pmf(torch.tensor([0.5, 0.5]), 3)
