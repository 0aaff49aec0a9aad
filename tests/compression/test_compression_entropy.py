"""Entropy models: floored tables, their bits, and exact constriction round trips."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
import torch

from flowfields.compression import FLOOR, gap_bits, gap_table, gaussian_bits, gaussian_table

F64 = torch.float64


def _tables(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    mean = 20 * torch.rand(n, generator=g, dtype=F64) - 10
    std = torch.exp(3 * torch.rand(n, generator=g, dtype=F64) - 2.5)  # 0.08 .. 1.6
    lat = gaussian_table(mean, std, 15).numpy()
    rho = torch.exp(6 * torch.rand(n, generator=g, dtype=F64) - 2)
    pi = torch.rand(n, generator=g, dtype=F64)
    gaps = torch.stack([gap_table(40, r, 1 / 64, p) for r, p in zip(rho, pi, strict=True)])
    return lat, gaps.numpy()


def test_tables_are_floored_and_normalised() -> None:
    lat, _ = _tables(0, 50)
    assert lat.shape == (50, 31)
    assert lat.min() >= FLOOR * (1 - 1e-12)
    np.testing.assert_allclose(lat.sum(-1), 1.0, rtol=0, atol=1e-12)
    table = gap_table(17, torch.tensor(3.0, dtype=F64), 0.01, torch.tensor(0.2, dtype=F64))
    assert table.shape == (17,) and float(table.min()) >= FLOOR * (1 - 1e-12)
    assert float(table.sum()) == pytest.approx(1.0, abs=1e-12)


def test_bits_are_the_table_entries() -> None:
    mean, std = torch.tensor([0.3, -2.2], dtype=F64), torch.tensor([0.7, 3.0], dtype=F64)
    table = gaussian_table(mean, std, 6)
    k = torch.arange(-6, 7, dtype=F64)
    bits = gaussian_bits(k[:, None], mean, std, 6)
    torch.testing.assert_close(torch.exp2(-bits).T, table, rtol=1e-12, atol=0)
    rho, pi = torch.tensor(5.0, dtype=F64), torch.tensor(0.1, dtype=F64)
    n = torch.arange(1, 10, dtype=F64)
    tb = gap_table(9, rho, 0.05, pi)
    gb = gap_bits(n, torch.full_like(n, 9.0), rho, torch.tensor(0.05, dtype=F64), pi)
    torch.testing.assert_close(torch.exp2(-gb), tb, rtol=1e-12, atol=0)
    one = gap_bits(torch.ones(1, dtype=F64), torch.ones(1, dtype=F64), rho, torch.tensor(0.05), pi)
    assert float(one) == 0.0  # a single possible gap costs nothing (and is not coded)


def test_gap_cost_grows_like_log_of_frame_rate() -> None:
    rho, pi = torch.tensor(4.0, dtype=F64), torch.tensor(0.2, dtype=F64)
    costs = []
    for fps in (32, 64, 128, 256, 512):
        n = torch.tensor([0.25 * fps], dtype=F64)  # the same quarter of the unit interval
        costs.append(float(gap_bits(n, torch.tensor([float(fps)]), rho, torch.tensor(1 / fps), pi)))
    steps = np.diff(costs)
    assert np.all(steps > 0.9) and np.all(steps < 1.1), steps  # ~ log2(2) per doubling


def test_gradients_of_bits_by_finite_differences() -> None:
    z = torch.tensor([0.2, 1.7, -3.1], dtype=F64, requires_grad=True)
    mean = torch.tensor([0.0, 1.0, -2.0], dtype=F64, requires_grad=True)
    std = torch.tensor([0.9, 1.5, 0.6], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: gaussian_bits(a, b, c, 8), (z, mean, std))
    rho = torch.tensor(3.0, dtype=F64, requires_grad=True)
    pi = torch.tensor(0.3, dtype=F64, requires_grad=True)
    n = torch.tensor([1.0, 3.0, 7.0], dtype=F64)
    fn = lambda r, p: gap_bits(n, torch.full_like(n, 7.0), r, torch.tensor(0.1, dtype=F64), p)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (rho, pi))


@pytest.mark.parametrize("family", ["latent", "gap"])
def test_coder_round_trip_is_exact_and_costs_the_estimate(family: str) -> None:
    lat, gaps = _tables(1, 800)
    probs = lat if family == "latent" else gaps
    rng = np.random.default_rng(2)
    symbols = np.array([rng.choice(probs.shape[1], p=p / p.sum()) for p in probs], dtype=np.int32)
    # a few symbols of floor probability: the coder must still code them
    symbols[:5] = np.argmin(probs[:5], axis=1)
    model = constriction.stream.model.Categorical(perfect=False)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(symbols, model, probs)
    words = enc.get_compressed()
    dec = constriction.stream.queue.RangeDecoder(words)
    np.testing.assert_array_equal(dec.decode(model, probs), symbols)
    estimate = float(-np.log2(probs[np.arange(len(symbols)), symbols]).sum())
    actual = 32 * len(words)
    assert actual <= estimate + 64, (actual, estimate)
    assert actual >= estimate - 64 - 1e-3 * estimate, (actual, estimate)
    assert math.isfinite(estimate)
