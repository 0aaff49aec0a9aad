"""Wood's rejection sampler of the von Mises–Fisher distribution on S^n, n = 1, 2, 4.

Closed forms (Mardia & Jupp, Directional Statistics, Sec. 9.3.2), with ``p = n + 1`` the
ambient dimension and ``A_p(kappa) = I_{p/2}(kappa) / I_{p/2 - 1}(kappa)``:
``E x = A_p mu``, ``E <mu, x>^2 = 1 - (p - 1) A_p / kappa``; the height ``w = <mu, x>`` has
density ``~ exp(kappa w) (1 - w^2)^((n - 2) / 2)`` on [-1, 1] (a KS test against its CDF by
quadrature). Tolerances: 4 standard errors (seeded), KS p-value > 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from flowfields.errors import FlowfieldsError
from flowfields.manifolds import Sphere
from flowfields.ppd import KappaSchedule, VMFMixturePath, sample_vmf

F64 = torch.float64
N = 20000


def mean_resultant_length(p: int, kappa: float) -> float:
    return float(special.ive(p / 2, kappa) / special.ive(p / 2 - 1, kappa))


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("kappa", [0.0, 0.5, 3.0, 40.0])
def test_moments_match_closed_forms(n: int, kappa: float) -> None:
    p = n + 1
    g = torch.Generator().manual_seed(10 * n + int(kappa))
    mu = Sphere(n).random_base(1, g, dtype=F64)[0]
    x = sample_vmf(mu.expand(N, p), torch.full((N,), kappa, dtype=F64), g)
    assert float(Sphere(n).constraint(x).abs().max()) < 1e-12
    a = 0.0 if kappa == 0 else mean_resultant_length(p, kappa)
    # E x = A_p mu, coordinate by coordinate (tangent components average to 0)
    se = x.std(0) / math.sqrt(N)
    assert bool(((x.mean(0) - a * mu).abs() <= 4 * se + 1e-12).all())
    w = x @ mu
    assert abs(float(w.mean()) - a) <= 4 * float(w.std()) / math.sqrt(N) + 1e-12
    w2 = 1 / p if kappa == 0 else 1 - (p - 1) * a / kappa
    assert abs(float((w * w).mean()) - w2) <= 4 * float((w * w).std()) / math.sqrt(N) + 1e-12


@pytest.mark.parametrize(("n", "kappa"), [(2, 3.0), (4, 0.5), (4, 3.0), (4, 40.0)])
def test_height_matches_its_density(n: int, kappa: float) -> None:
    g = torch.Generator().manual_seed(100 + n)
    mu = torch.zeros(n + 1, dtype=F64)
    mu[0] = 1.0
    w = sample_vmf(mu.expand(N, n + 1), torch.full((N,), kappa, dtype=F64), g)[:, 0].numpy()

    def density(s: float) -> float:
        return math.exp(kappa * (s - 1)) * (1 - s * s) ** ((n - 2) / 2)

    total = integrate.quad(density, -1, 1)[0]

    def cdf(s: np.ndarray) -> np.ndarray:
        return np.array([integrate.quad(density, -1, float(v))[0] / total for v in s])

    assert stats.kstest(w[:2000], cdf).pvalue > 1e-3


def test_kernel_path_samples_on_s1_and_s4() -> None:
    """VMFMixturePath now samples on every S^n: one center, the sample mean is A_p mu."""
    for n in (1, 4):
        sphere = Sphere(n)
        g = torch.Generator().manual_seed(200 + n)
        c = sphere.random_base(1, g, dtype=F64)
        path = VMFMixturePath(sphere, KappaSchedule(6.0, 1.0))
        x = path.sample(torch.full((N,), 0.5, dtype=F64), c, g)
        w = x @ c[0]
        a = mean_resultant_length(n + 1, 3.0)
        assert abs(float(w.mean()) - a) <= 4 * float(w.std()) / math.sqrt(N)


def test_bad_input_raises() -> None:
    mu = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    with pytest.raises(FlowfieldsError, match="kappa"):
        sample_vmf(mu, torch.tensor([-1.0], dtype=F64))
    with pytest.raises(FlowfieldsError, match="kappa"):
        sample_vmf(mu, torch.tensor([float("nan")], dtype=F64))
    with pytest.raises(FlowfieldsError, match="kappa"):
        sample_vmf(mu, torch.tensor([1.0, 2.0], dtype=F64))
    with pytest.raises(FlowfieldsError, match="mu"):
        sample_vmf(torch.ones(3, dtype=F64), torch.tensor([1.0], dtype=F64))
