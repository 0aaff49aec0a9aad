"""CNF sampling and likelihood against closed forms (float64).

Statistical tests use 4 standard errors (two-sided false-alarm rate about 6e-5 each).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.linalg import expm
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.integrate import ODEOptions
from flowfields.matching import CNF, IsotropicNormal, StandardNormal, base_for_path
from flowfields.nn import MLPField
from flowfields.paths import CondOTPath, VEPath

TIGHT = ODEOptions(rtol=1e-9, atol=1e-9)


class LinearField(nn.Module):
    """v(t, x) = A x (time-independent): x_1 = expm(A) x_0, log-det = tr(A)."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, x):
        return x.reshape(x.shape[0], -1) @ self.A.T


class GaussianOptimalField(nn.Module):
    """Marginal CondOT field for data N(m, s^2 I) (see test_matching_loss.py)."""

    def __init__(self, m: torch.Tensor, s: float, sigma_min: float) -> None:
        super().__init__()
        self.register_buffer("m", m)
        self.s, self.c = s, 1.0 - sigma_min

    def forward(self, t, x):
        sig = 1.0 - self.c * t
        k = (t * self.s**2 - self.c * sig) / (sig**2 + t**2 * self.s**2)
        return self.m + k * (x - t * self.m)


def gaussian_log_prob(x, mean, std):
    d = x.shape[1]
    return (
        -0.5 * (((x - mean) / std) ** 2).sum(1)
        - d * math.log(std)
        - 0.5 * d * math.log(2 * math.pi)
    )


def test_linear_flow_log_prob_and_sample_match_closed_form():
    dtype = torch.float64
    A = torch.tensor([[0.3, -0.8, 0.1], [0.5, -0.2, 0.0], [0.2, 0.4, 0.6]], dtype=dtype)
    cnf = CNF(LinearField(A.clone()), dim=3)
    E = torch.from_numpy(expm(A.numpy()))
    x = torch.randn(50, 3, dtype=dtype)
    out = cnf.log_prob_details(x, solver=TIGHT)
    x_0 = x @ torch.linalg.inv(E).T
    expected = gaussian_log_prob(x_0, 0.0, 1.0) - torch.trace(A)
    torch.testing.assert_close(out.log_p, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(out.x_0, x_0, rtol=0, atol=1e-7)
    assert out.nfe > 0
    # sampling transports given base points with expm(A)
    z = torch.randn(20, 3, dtype=dtype)
    torch.testing.assert_close(cnf.sample(20, x_0=z, solver=TIGHT), z @ E.T, rtol=0, atol=1e-7)
    # fixed-step rk4 with 40 steps is accurate to ~1e-7 here, and counts 4 evals per step
    s = cnf.sample_details(20, solver=ODEOptions("rk4", step_size=1 / 40), x_0=z)
    assert s.nfe == 160
    torch.testing.assert_close(s.x_1, z @ E.T, rtol=0, atol=1e-6)


def test_image_shaped_events_flatten_consistently():
    dtype = torch.float64
    A = 0.3 * torch.randn(4, 4, dtype=dtype)

    class ImageLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = nn.Parameter(A.clone())

        def forward(self, t, x):
            return (x.reshape(x.shape[0], 4) @ self.A.T).reshape(x.shape)

    cnf = CNF(ImageLinear(), dim=(1, 2, 2))
    x = torch.randn(8, 1, 2, 2, dtype=dtype)
    E = torch.from_numpy(expm(A.numpy()))
    x_0 = x.reshape(8, 4) @ torch.linalg.inv(E).T
    expected = gaussian_log_prob(x_0, 0.0, 1.0) - torch.trace(A)
    torch.testing.assert_close(cnf.log_prob(x, solver=TIGHT), expected, rtol=0, atol=1e-7)
    assert cnf.sample(5).shape == (5, 1, 2, 2)


def test_optimal_gaussian_field_gives_the_data_density_and_entropy():
    # The CondOT marginal field for N(m, s^2 I) data transports N(0, I) to
    # N(m, (s^2 + sigma_min^2) I) at t = 1 exactly.
    dtype = torch.float64
    m, s, sm = torch.tensor([1.0, -0.5], dtype=dtype), 0.6, 0.05
    cnf = CNF(GaussianOptimalField(m, s, sm), dim=2)
    std1 = math.sqrt(s**2 + sm**2)
    x = m + std1 * torch.randn(40, 2, dtype=dtype) * 1.5
    torch.testing.assert_close(
        cnf.log_prob(x, solver=TIGHT), gaussian_log_prob(x, m, std1), rtol=0, atol=1e-7
    )
    # sample() and log_prob() agree: E[-log p(X)] over model samples is the entropy.
    g = torch.Generator().manual_seed(5)
    xs = cnf.sample(4000, generator=g, solver=ODEOptions(rtol=1e-7, atol=1e-7))
    assert xs.dtype == dtype
    lp = cnf.log_prob(xs, solver=ODEOptions(rtol=1e-7, atol=1e-7))
    entropy = 2 * (0.5 * math.log(2 * math.pi * math.e) + math.log(std1))
    se = lp.std().item() / math.sqrt(lp.numel())
    assert abs(-lp.mean().item() - entropy) < 4 * se
    # and the samples have the right moments (4 s.e.)
    assert torch.all((xs.mean(0) - m).abs() < 4 * std1 / math.sqrt(4000))


def _nonlinear_field(dtype):
    g = torch.Generator().manual_seed(11)
    W1 = torch.randn(16, 2, generator=g, dtype=dtype)
    b1 = torch.randn(16, generator=g, dtype=dtype)
    W2 = torch.randn(2, 16, generator=g, dtype=dtype) * 0.5
    w_t = torch.randn(16, generator=g, dtype=dtype)

    class Field(nn.Module):
        def forward(self, t, x):
            return torch.tanh(x @ W1.T + b1 + t * w_t) @ W2.T

    return Field()


def test_density_of_nonlinear_2d_cnf_integrates_to_one():
    dtype = torch.float64
    cnf = CNF(_nonlinear_field(dtype), dim=2)
    n, lim = 161, 12.0
    g = torch.linspace(-lim, lim, n, dtype=dtype)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        p = cnf.log_prob(grid, solver=ODEOptions(rtol=1e-7, atol=1e-7)).exp().reshape(n, n)
    h = (g[1] - g[0]).item()
    mass = p.sum().item() * h * h  # the density is ~0 at the border: Riemann sum is spectral
    assert abs(mass - 1.0) < 1e-5
    # the flow is far from the identity: the density differs from N(0, I) substantially
    gauss = torch.exp(-0.5 * (grid**2).sum(1)).reshape(n, n) / (2 * math.pi)
    assert (p - gauss).abs().sum().item() * h * h > 0.2


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_exact(probe):
    dtype = torch.float64
    torch.manual_seed(0)
    field = MLPField(3, hidden=32, depth=2).to(dtype)
    cnf = CNF(field, dim=3)
    x = torch.randn(4, 3, dtype=dtype)
    reps = 500
    xr = x.repeat_interleave(reps, dim=0)
    with torch.no_grad():
        exact = cnf.log_prob(x, solver=ODEOptions(rtol=1e-7, atol=1e-7))
        g = torch.Generator().manual_seed(2)
        hutch = cnf.log_prob(
            xr,
            estimator="hutchinson",
            probe=probe,
            generator=g,
            solver=ODEOptions(rtol=1e-7, atol=1e-7),
        ).reshape(4, reps)
    se = hutch.std(1) / math.sqrt(reps)
    assert torch.all(se > 0)  # the estimate is genuinely stochastic
    assert torch.all((hutch.mean(1) - exact).abs() < 4 * se), (hutch.mean(1), exact, se)


def test_hutchinson_with_given_probe_is_deterministic():
    dtype = torch.float64
    cnf = CNF(_nonlinear_field(dtype), dim=2)
    x = torch.randn(6, 2, dtype=dtype)
    probe = torch.ones(6, 2, dtype=dtype)
    a = cnf.log_prob(x, estimator="hutchinson", probe=probe)
    b = cnf.log_prob(x, estimator="hutchinson", probe=probe.clone())
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bases_for_paths():
    assert isinstance(base_for_path(CondOTPath(), 2), StandardNormal)
    base = base_for_path(VEPath(sigma_max=7.0), 2)
    assert isinstance(base, IsotropicNormal) and base.std == 7.0
    x = torch.randn(5, 2, dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 7.0).log_prob(x).sum(1)
    torch.testing.assert_close(base.log_prob(x), ref)
    cnf = CNF(lambda t, x: 0.0 * x, dim=2, base=base)
    xs = cnf.sample(3000, solver=ODEOptions("euler", step_size=1.0))
    z = cnf.sample_base(3000, torch.Generator().manual_seed(0))
    assert z.shape == (3000, 2) and abs(z.std().item() - 7.0) < 0.4
    assert abs(xs.std().item() - 7.0) < 0.4
    torch.testing.assert_close(
        cnf.log_prob(x.float(), solver=ODEOptions("euler", step_size=0.5)), ref.float()
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c: c.log_prob(torch.zeros(4, 3)), "x"),
        (lambda c: c.log_prob(torch.zeros(4)), "x"),
        (lambda c: c.log_prob(torch.tensor([[float("nan"), 0.0]])), "x"),
        (lambda c: c.log_prob(torch.zeros(4, 2), estimator="hutch++"), "estimator"),
        (lambda c: c.log_prob(torch.zeros(4, 2), estimator="hutchinson", probe="x"), "probe"),
        (lambda c: c.log_prob(torch.zeros(4, 2), solver=ODEOptions("rk45")), "method"),
        (lambda c: c.sample(0), "n"),
        (lambda c: c.sample_base(0), "n"),
        (lambda c: c.sample(4, solver=ODEOptions("euler", step_size=0)), "step_size"),
        (lambda c: c.sample(4, solver=ODEOptions("euler")), "step_size"),
        (lambda c: c.sample(4, x_0=torch.zeros(3, 2)), "x_0"),
    ],
)
def test_bad_input_raises(call, match):
    cnf = CNF(MLPField(2, hidden=8, depth=1), dim=2)
    with pytest.raises(FlowfieldsError, match=match):
        call(cnf)


@pytest.mark.parametrize("dim", [0, (2, -1), "2", 2.5])
def test_bad_dim_raises(dim):
    with pytest.raises(FlowfieldsError, match="dim"):
        CNF(lambda t, x: x, dim=dim)
