"""Two-probe PPD_2: ``r_hat_1 r_hat_2`` is unbiased for ``r^2``; one probe is biased by the
probe variance. Measured against a field whose divergence and probe variance are closed forms.

The field on T^5: ``v_i(t, x) = a (1 + t) sum_j A_ij sin(x_j)``, so ``J_ij = a (1 + t) A_ij
cos(x_j)``, ``div v = a (1 + t) sum_i A_ii cos(x_i)`` and the Rademacher Hutchinson variance
is ``sum_{i<j} (J_ij + J_ji)^2``. Statistical checks are seeded, with tolerance 4 standard
errors of the replicate means.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.manifolds import FlatTorus
from flowfields.ppd import KappaSchedule, VonMisesMixturePath, lmc_residual, ppd_loss

F64 = torch.float64
D = 5
TORUS = FlatTorus(D)
PATH = VonMisesMixturePath(TORUS, KappaSchedule(4.0, 1.0))
A = torch.randn(D, D, generator=torch.Generator().manual_seed(0), dtype=F64)


def sine_field(
    a: torch.Tensor | float = 1.0,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def v(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return a * (1 + tt)[:, None] * (torch.sin(x) @ A.T)

    return v


def jacobian(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``J[b, i, j] = (1 + t_b) A_ij cos(x_bj)`` (a = 1)."""
    return (1 + t)[:, None, None] * A[None] * torch.cos(x)[:, None, :]


def probe_variance(j: torch.Tensor) -> torch.Tensor:
    s = j + j.transpose(1, 2)
    return (s.pow(2).sum((1, 2)) - torch.diagonal(s, dim1=1, dim2=2).pow(2).sum(1)) / 2


def _points(seed: int, b: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = TORUS.random_base(8, g, dtype=F64)
    t = torch.rand(b, generator=g, dtype=F64)
    return t, PATH.sample(t, centers, g), centers


def test_exact_divergence_is_the_closed_form() -> None:
    t, x, centers = _points(1)
    r = lmc_residual(sine_field(), PATH, t, x, centers)
    div = (1 + t) * (torch.diagonal(A) * torch.cos(x)).sum(-1)
    torch.testing.assert_close(r.div_v, div, rtol=0, atol=1e-12)


def test_two_probe_square_is_unbiased_and_one_probe_is_biased_by_the_variance() -> None:
    t, x, centers = _points(2)
    field = sine_field()
    with torch.no_grad():
        r2_exact = lmc_residual(field, PATH, t, x, centers).residual.pow(2)
    var = probe_variance(jacobian(t, x))
    assert float(var.mean()) > 0.1 * float(r2_exact.mean())  # a bias worth measuring
    g = torch.Generator().manual_seed(3)
    reps = 600
    one, two = [], []
    with torch.no_grad():
        for _ in range(reps):
            r1 = lmc_residual(field, PATH, t, x, centers, divergence="hutchinson", generator=g)
            one.append(r1.residual.pow(2).mean())
            rp = lmc_residual(
                field, PATH, t, x, centers, divergence="hutchinson", probes=2, generator=g
            )
            assert rp.residual_2 is not None
            # each residual of the pair is unbiased on its own: same mean as the exact one
            two.append((rp.residual * rp.residual_2).mean())
    one_t, two_t = torch.stack(one), torch.stack(two)
    target = float(r2_exact.mean())
    se_one = float(one_t.std()) / math.sqrt(reps)
    se_two = float(two_t.std()) / math.sqrt(reps)
    # two probes: mean matches the exact PPD_2 at these points
    assert abs(float(two_t.mean()) - target) <= 4 * se_two
    # one probe: biased upward, by the closed-form probe variance
    bias = float(one_t.mean()) - target
    assert bias > 4 * se_one
    assert abs(bias - float(var.mean())) <= 4 * se_one


def test_ppd_loss_two_probes_matches_exact_in_value_and_gradient() -> None:
    """Paired by seed (same times, centers and points): the two-probe loss and its gradient
    w.r.t. a scale parameter average to the exact ones; one probe's do not."""
    data = TORUS.random_base(16, torch.Generator().manual_seed(4), dtype=F64)
    reps = 300
    rows = []
    for seed in range(reps):
        row = []
        for kind, probes in (("exact", 1), ("hutchinson", 1), ("hutchinson", 2)):
            a = torch.tensor(1.0, dtype=F64, requires_grad=True)
            g = torch.Generator().manual_seed(1000 + seed)
            loss = ppd_loss(
                sine_field(a), PATH, data, n_points=32, divergence=kind, probes=probes, generator=g
            )
            (grad,) = torch.autograd.grad(loss, a)
            row.append(torch.stack([loss.detach(), grad]))
        rows.append(torch.stack(row))
    res = torch.stack(rows)  # (reps, 3 estimators, [loss, grad])
    d_one = res[:, 1] - res[:, 0]
    d_two = res[:, 2] - res[:, 0]
    se_one = d_one.std(0) / math.sqrt(reps)
    se_two = d_two.std(0) / math.sqrt(reps)
    assert bool((d_two.mean(0).abs() <= 4 * se_two).all())  # unbiased: loss and gradient
    assert bool((d_one.mean(0) > 4 * se_one).all())  # biased up: loss and gradient


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probes": 3, "divergence": "hutchinson"}, "probes"),
        ({"probes": 2, "divergence": "exact"}, "probes"),
        ({"probes": 2, "divergence": "hutchinson", "l": 1}, "probes"),
    ],
)
def test_bad_probes_raise(kwargs: dict, match: str) -> None:
    data = TORUS.random_base(4, torch.Generator().manual_seed(5), dtype=F64)
    with pytest.raises(FlowfieldsError, match=match):
        ppd_loss(sine_field(), PATH, data, n_points=4, **kwargs)
    t, x, centers = _points(6, b=4)
    with pytest.raises(FlowfieldsError, match="probes"):
        lmc_residual(sine_field(), PATH, t, x, centers, probes=2)
