"""2-D toys: densities integrate to 1, exact entropies, moments against closed forms.

Statistical checks use 5 standard errors (false-alarm rate about 6e-7 each, normal
approximation) or p-value thresholds of 1e-4, with fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from flowfields.data import (
    TOYS,
    Checkerboard,
    EightGaussians,
    Rings,
    Toy2D,
    get_toy,
    support_fraction,
)
from flowfields.errors import FlowfieldsError

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grid_integral(toy: Toy2D, half: float, h: float) -> float:
    """Midpoint rule of exp(log_prob) over [-half, half]^2 (cell centres off the cell edges)."""
    c = torch.arange(-half + h / 2, half, h, dtype=F64)
    xs, ys = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
    return float(toy.log_prob(pts).exp().sum() * h * h)


# ---- every toy -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOYS)
def test_every_toy_samples_reproducibly(name: str) -> None:
    toy = get_toy(name)
    a = toy.sample(500, _gen(0), dtype=F64)
    b = toy.sample(500, _gen(0), dtype=F64)
    assert a.shape == (500, 2) and a.dtype == F64 and bool(torch.isfinite(a).all())
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert toy.sample(3).dtype == torch.get_default_dtype()
    assert float(a.abs().max()) < 6.0  # the usual [-4, 4]^2 scale, with tails
    assert toy.name == name and toy.dim == 2


@pytest.mark.parametrize("name", ["2spirals", "moons", "pinwheel"])
def test_toys_without_closed_form_refuse_log_prob(name: str) -> None:
    toy = get_toy(name)
    assert not toy.has_log_prob and toy.entropy is None
    with pytest.raises(FlowfieldsError, match="closed-form"):
        toy.log_prob(torch.zeros(3, 2))


def test_bad_input() -> None:
    with pytest.raises(FlowfieldsError, match="name"):
        get_toy("swissroll")
    with pytest.raises(FlowfieldsError, match="keyword"):
        get_toy("checkerboard", size=3)
    with pytest.raises(FlowfieldsError, match="n"):
        get_toy("moons").sample(-1)
    with pytest.raises(FlowfieldsError, match="x"):
        Checkerboard().log_prob(torch.zeros(3, 3))
    with pytest.raises(FlowfieldsError, match="std"):
        EightGaussians(std=0.0)
    for name in TOYS:
        toy = get_toy(name)
        if toy.has_log_prob:
            with pytest.raises(FlowfieldsError, match="non-finite"):
                toy.log_prob(torch.tensor([[0.5, float("nan")], [0.0, 0.0]]))
    # the support mask (used on diverged samples) counts NaN / Inf as off the support
    mask = Checkerboard().in_support(torch.tensor([[-3.0, -3.0], [float("nan"), -3.0]]))
    assert mask.tolist() == [True, False]


# ---- checkerboard ----------------------------------------------------------------------------


def test_checkerboard_density_integrates_to_one_and_entropy_is_ln_32() -> None:
    toy = Checkerboard()
    assert abs(_grid_integral(toy, 5.0, 0.02) - 1.0) < 1e-9
    assert toy.entropy == pytest.approx(math.log(32.0), abs=1e-15)
    x = toy.sample(20_000, _gen(1), dtype=F64)
    # every sample has density 1/32, so the Monte Carlo entropy is exactly ln 32
    assert -float(toy.log_prob(x).mean()) == pytest.approx(math.log(32.0), abs=1e-12)
    assert support_fraction(x) == 1.0


def test_checkerboard_cells_are_uniform() -> None:
    n = 40_000
    x = Checkerboard().sample(n, _gen(2), dtype=F64)
    cell = torch.floor((x + 4) / 2).long()
    idx = cell[:, 0] * 4 + cell[:, 1]
    counts = torch.bincount(idx, minlength=16).numpy()
    support = [i * 4 + j for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    assert counts.sum() == counts[support].sum()  # nothing off the 8 squares
    assert scipy.stats.chisquare(counts[support]).pvalue > 1e-4
    within = ((x + 4) / 2 - cell).numpy()  # position inside its square, uniform on [0, 1)^2
    for k in range(2):
        assert scipy.stats.kstest(within[:, k], "uniform").pvalue > 1e-4


def test_support_fraction_of_standard_normal_matches_closed_form() -> None:
    n = 100_000
    frac = support_fraction(torch.randn(n, 2, generator=_gen(3), dtype=F64))
    phi = scipy.stats.norm.cdf
    edges = [-4.0, -2.0, 0.0, 2.0, 4.0]
    mass = [phi(edges[i + 1]) - phi(edges[i]) for i in range(4)]
    exact = sum(mass[i] * mass[j] for i in range(4) for j in range(4) if (i + j) % 2 == 0)
    assert abs(frac - exact) < 5 * math.sqrt(exact * (1 - exact) / n)
    assert support_fraction(torch.tensor([[-3.0, -3.0], [-3.0, -1.0], [5.0, 5.0]])) == 1 / 3


# ---- 8 gaussians -----------------------------------------------------------------------------


def test_eight_gaussians_density_and_reference() -> None:
    toy = EightGaussians()
    assert abs(_grid_integral(toy, 6.0, 0.02) - 1.0) < 1e-9
    x = torch.randn(50, 2, generator=_gen(4), dtype=F64) * 2
    ref = np.zeros(50)
    for c in toy.centers().numpy():
        ref += scipy.stats.multivariate_normal(c, toy.std**2 * np.eye(2)).pdf(x.numpy()) / 8
    np.testing.assert_allclose(toy.log_prob(x).numpy(), np.log(ref), rtol=1e-10)


def test_eight_gaussians_moments_and_entropy() -> None:
    toy = EightGaussians()
    n = 100_000
    x = toy.sample(n, _gen(5), dtype=F64)
    second = toy.radius**2 / 2 + toy.std**2  # E[x x^T] = (R^2 / 2 + s^2) I
    assert float(x.mean(0).abs().max()) < 5 * math.sqrt(second / n)
    cov = (x.T @ x / n).numpy()
    fourth = 3 * toy.std**4 + 6 * toy.std**2 * toy.radius**2 / 2 + 3 * toy.radius**4 / 8
    assert np.abs(np.diag(cov) - second).max() < 5 * math.sqrt((fourth - second**2) / n)
    lp = toy.log_prob(x)
    se = float(lp.std()) / math.sqrt(n)
    assert abs(-float(lp.mean()) - toy.entropy) < 5 * se
    # well separated components: entropy just below ln 8 + entropy of one component
    assert 0 < math.log(8) + math.log(2 * math.pi * math.e * toy.std**2) - toy.entropy < 0.02


# ---- rings -----------------------------------------------------------------------------------


def test_rings_density_matches_angle_average_and_integrates_to_one() -> None:
    toy = Rings()
    assert abs(_grid_integral(toy, 4.0, 0.01) - 1.0) < 1e-8
    # brute force: average of N(x; r (cos a, sin a), s^2 I) over 4096 angles per ring
    x = torch.randn(40, 2, generator=_gen(6), dtype=F64) * 1.5
    a = torch.arange(4096, dtype=F64) * (2 * math.pi / 4096)
    circle = torch.stack([torch.cos(a), torch.sin(a)], dim=-1)
    dens = torch.zeros(40, dtype=F64)
    for r in toy.radii:
        sq = ((x[:, None, :] - r * circle[None]) ** 2).sum(-1)
        dens += torch.exp(-sq / (2 * toy.std**2)).mean(-1) / (2 * math.pi * toy.std**2) / 4
    torch.testing.assert_close(toy.log_prob(x), dens.log(), rtol=1e-9, atol=1e-9)


def test_rings_moments_and_entropy() -> None:
    toy = Rings()
    n = 100_000
    x = toy.sample(n, _gen(7), dtype=F64)
    sq = (x**2).sum(-1)
    expected = sum(r * r for r in toy.radii) / len(toy.radii) + 2 * toy.std**2
    assert abs(float(sq.mean()) - expected) < 5 * float(sq.std()) / math.sqrt(n)
    lp = toy.log_prob(x)
    assert abs(-float(lp.mean()) - toy.entropy) < 5 * float(lp.std()) / math.sqrt(n)


# ---- toys without a density: moments ---------------------------------------------------------


def test_moons_pinwheel_spirals_moments() -> None:
    n = 100_000
    moons = get_toy("moons").sample(n, _gen(8), dtype=F64)
    # outer half circle mean (0, 2/pi), inner (1, 1/2 - 2/pi): average (1/2, 1/4), then 2x + c
    exact = torch.tensor([0.0, 0.3], dtype=F64)
    assert float((moons.mean(0) - exact).abs().max()) < 5 * float(moons.std(0).max()) / n**0.5
    pin = get_toy("pinwheel").sample(n, _gen(9), dtype=F64)
    sq = (pin**2).sum(-1)  # rotations keep |f|: E|x|^2 = 4 (1 + 0.3^2 + 0.1^2)
    assert abs(float(sq.mean()) - 4.4) < 5 * float(sq.std()) / n**0.5
    assert float(pin.mean(0).abs().max()) < 5 * float(pin.std(0).max()) / n**0.5
    spi = get_toy("2spirals").sample(n, _gen(10), dtype=F64)
    sq = (spi**2).sum(-1)
    # E|x|^2 = (E a^2 + 2 E[arm . j] + E|j|^2) / 9 + 2 (0.1)^2, a = 3 pi sqrt(u)
    cross = scipy.integrate.quad(
        lambda u: (
            0.25
            * (3 * math.pi * u**0.5)
            * (math.sin(3 * math.pi * u**0.5) - math.cos(3 * math.pi * u**0.5))
        ),
        0,
        1,
        limit=200,
    )[0]
    exact_sq = (9 * math.pi**2 / 2 + 2 * cross + 1 / 6) / 9 + 0.02
    assert abs(float(sq.mean()) - exact_sq) < 5 * float(sq.std()) / n**0.5
    assert float(spi.mean(0).abs().max()) < 5 * float(spi.std(0).max()) / n**0.5


@pytest.mark.parametrize("name", ["checkerboard", "8gaussians", "rings"])
def test_samples_follow_log_prob_binned_chi_square(name: str) -> None:
    # sampler and closed-form density agree: counts in a 10 x 10 grid of bins over [-5, 5]^2
    # against bin probabilities integrated from exp(log_prob) (midpoint rule, 40 x 40 per bin)
    toy = get_toy(name)
    n, bins, sub = 50_000, 10, 40
    x = toy.sample(n, _gen(11), dtype=F64)
    idx = torch.floor((x + 5.0) / 1.0).long()
    assert bool(((idx >= 0) & (idx < bins)).all())  # all mass well inside [-5, 5]^2
    counts = torch.bincount(idx[:, 0] * bins + idx[:, 1], minlength=bins * bins).double()
    h = 1.0 / sub
    c = torch.arange(-5.0 + h / 2, 5.0, h, dtype=F64)
    xs, ys = torch.meshgrid(c, c, indexing="ij")
    dens = toy.log_prob(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)).exp() * h * h
    prob = dens.reshape(bins, sub, bins, sub).sum(dim=(1, 3)).reshape(-1)
    assert abs(float(prob.sum()) - 1) < 1e-6
    keep = prob * n >= 5  # the usual validity rule of the chi-square approximation
    observed, expected = counts[keep].numpy(), (prob[keep] * n).numpy()
    expected *= observed.sum() / expected.sum()
    assert scipy.stats.chisquare(observed, expected).pvalue > 1e-4


@pytest.mark.parametrize("name", TOYS)
def test_toys_on_device(name: str, device: torch.device) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    x = get_toy(name).sample(64, g)
    assert x.device.type == torch.device(device).type and x.shape == (64, 2)
    y = get_toy(name).sample(64, device=device)
    assert y.device.type == torch.device(device).type
