"""cfm_loss against the closed-form marginal field of Gaussian data (Theorem 2 of 2210.02747).

For data N(m, s^2 I) and the CondOT path (sigma_t = 1 - c t, c = 1 - sigma_min), x_t and
u_t = x_1 - c x_0 are jointly Gaussian, so the marginal field is the affine regression

    v*(t, x) = m + k(t) (x - t m),   k(t) = (t s^2 - c sigma_t) / (sigma_t^2 + t^2 s^2).

Statistical tests use 4 standard errors (two-sided false-alarm rate about 6e-5 each).
"""

from __future__ import annotations

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.matching import cfm_loss
from flowfields.paths import CondOTPath


def optimal_field(m: torch.Tensor, s: float, sigma_min: float):
    c = 1.0 - sigma_min

    def v(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1) if t.ndim else t
        sig = 1.0 - c * t
        k = (t * s**2 - c * sig) / (sig**2 + t**2 * s**2)
        return m + k * (x - t * m)

    return v


def draw(n: int, m: torch.Tensor, s: float, dtype: torch.dtype):
    g = torch.Generator().manual_seed(1)
    x_1 = m + s * torch.randn(n, m.numel(), generator=g, dtype=dtype)
    x_0 = torch.randn(n, m.numel(), generator=g, dtype=dtype)
    t = torch.rand(n, generator=g, dtype=dtype)
    return x_0, x_1, t


def test_point_mass_target_gives_zero_loss(dtype):
    # Data = a point mass at m and sigma_min = 0: the conditional and marginal fields coincide,
    # u_t = (m - x_t) / (1 - t), so the loss is exactly zero (up to rounding).
    m = torch.tensor([1.5, -0.5], dtype=dtype)
    path = CondOTPath(sigma_min=0.0)
    x_1 = m.expand(64, 2).clone()
    x_0 = torch.randn(64, 2, dtype=dtype)
    t = torch.rand(64, dtype=dtype) * 0.99
    loss = cfm_loss(lambda t, x: (m - x) / (1 - t[:, None]), path, x_1, x_0=x_0, t=t)
    assert loss.item() < (1e-20 if dtype == torch.float64 else 1e-8)
    # and a wrong field gives a clearly positive loss
    assert cfm_loss(lambda t, x: m - x, path, x_1, x_0=x_0, t=t).item() > 0.1


def test_cfm_equals_manual_squared_norm(dtype):
    m = torch.tensor([0.3, -1.0, 2.0], dtype=dtype)
    x_0, x_1, t = draw(100, m, 0.5, dtype)
    path = CondOTPath(sigma_min=1e-2)

    def v(t, x):
        return torch.sin(x) * t[:, None]

    c = 1 - 1e-2
    x_t = (1 - c * t[:, None]) * x_0 + t[:, None] * x_1
    u = x_1 - c * x_0
    expected = ((v(t, x_t) - u) ** 2).sum(1).mean()
    torch.testing.assert_close(
        cfm_loss(v, path, x_1, x_0=x_0, t=t), expected, rtol=1e-12, atol=1e-12
    )


def test_residual_at_optimal_field_has_zero_mean():
    # The gradient of cfm_loss w.r.t. an additive offset b of the field at b = 0 is
    # 2 E[v*(t, x_t) - u_t] = 0; for a wrong field (v* + 0.2) it is 0.4 per coordinate.
    dtype = torch.float64
    m, s, sm = torch.tensor([1.0, -2.0]), 0.7, 1e-3
    m = m.to(dtype)
    x_0, x_1, t = draw(20000, m, s, dtype)
    path = CondOTPath(sigma_min=sm)
    vstar = optimal_field(m, s, sm)
    for shift, expected in ((0.0, 0.0), (0.2, 0.4)):
        b = torch.zeros(2, dtype=dtype, requires_grad=True)
        loss = cfm_loss(lambda t, x, sh=shift, b=b: vstar(t, x) + sh + b, path, x_1, x_0=x_0, t=t)
        (grad,) = torch.autograd.grad(loss, b)
        c = 1 - sm
        x_t = (1 - c * t[:, None]) * x_0 + t[:, None] * x_1
        per = 2 * (vstar(t, x_t) + shift - (x_1 - c * x_0))
        se = per.std(0) / per.shape[0] ** 0.5
        torch.testing.assert_close(grad, per.mean(0), rtol=1e-10, atol=1e-12)
        assert torch.all((grad - expected).abs() < 4 * se), (grad, se)


def test_cfm_and_fm_losses_differ_by_a_constant():
    # Theorem 2: L_CFM(v) - L_FM(v) does not depend on v. With shared samples, the difference
    # between two fields' CFM losses equals the difference of their FM losses within 4 s.e.
    dtype = torch.float64
    m, s, sm = torch.tensor([0.5, 1.0]).to(dtype), 0.5, 1e-4
    x_0, x_1, t = draw(20000, m, s, dtype)
    path = CondOTPath(sigma_min=sm)
    vstar = optimal_field(m, s, sm)

    def v_a(t, x):
        return torch.tanh(x) * (1 + t[:, None])

    def v_b(t, x):
        return 0.5 * x.flip(1) - t[:, None] + 1.5

    c = 1 - sm
    x_t = (1 - c * t[:, None]) * x_0 + t[:, None] * x_1
    u = x_1 - c * x_0
    cfm_gap = cfm_loss(v_a, path, x_1, x_0=x_0, t=t) - cfm_loss(v_b, path, x_1, x_0=x_0, t=t)
    fm_a = ((v_a(t, x_t) - vstar(t, x_t)) ** 2).sum(1)
    fm_b = ((v_b(t, x_t) - vstar(t, x_t)) ** 2).sum(1)
    per_cfm = ((v_a(t, x_t) - u) ** 2).sum(1) - ((v_b(t, x_t) - u) ** 2).sum(1)
    d = per_cfm - (fm_a - fm_b)
    se = d.std() / d.numel() ** 0.5
    assert abs(cfm_gap.item() - (fm_a - fm_b).mean().item()) < 4 * se.item()
    # the fields differ substantially, so the test is not trivially satisfied
    assert abs((fm_a - fm_b).mean().item()) > 10 * se.item()


def test_defaults_draw_noise_and_times():
    x_1 = torch.randn(32, 2)
    g = torch.Generator().manual_seed(3)
    a = cfm_loss(lambda t, x: x, "condot", x_1, generator=g)
    g = torch.Generator().manual_seed(3)
    b = cfm_loss(lambda t, x: x, "condot", x_1, generator=g)
    assert a.item() == b.item() and a.item() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x_1": torch.tensor([[float("nan"), 0.0]])}, "x_1"),
        ({"x_1": torch.tensor([[float("inf"), 0.0], [1.0, 2.0]])}, "non-finite"),
        ({"x_1": torch.tensor([[float("inf"), float("-inf")]])}, "non-finite"),
        ({"x_0": torch.tensor([[0.0, float("nan")]] * 4)}, "x_0"),
        ({"t": torch.full((4,), -0.5), "path": "vp"}, r"\[0, 1\]"),
        ({"t": torch.tensor([0.1, float("nan"), 0.2, 0.3])}, "t"),
        ({"x_1": torch.zeros(4)}, "x_1"),
        ({"x_0": torch.zeros(3, 2)}, "x_0"),
        ({"t": torch.zeros(3)}, "t"),
        ({"t": torch.full((4,), 1.5)}, "t"),
        ({"path": "diffusion"}, "diffusion"),
        ({"path": object()}, "path"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"v": lambda t, x: x, "path": "condot", "x_1": torch.zeros(4, 2)}
    args.update(kwargs)
    with pytest.raises(FlowfieldsError, match=match):
        cfm_loss(**args)


def test_finite_data_whose_sum_overflows_is_accepted():
    """The finite-data check sums first; an overflowing sum of finite values is not NaN data."""
    big = torch.finfo(torch.float32).max
    x_1 = torch.tensor([[big, big], [big, big]])
    loss = cfm_loss(lambda t, x: x, "condot", x_1, x_0=torch.zeros(2, 2), t=torch.zeros(2))
    assert isinstance(loss, torch.Tensor)


class _AffinePath:
    """A path that is not a GaussianPath: cfm_loss must check t itself."""

    def sample_t(self, n, generator=None):
        return torch.rand(n, generator=generator)

    def sample(self, x_0, x_1, t):
        from flowfields.paths import PathSample

        tt = t[:, None]
        return PathSample(t=t, x_t=(1 - tt) * x_0 + tt * x_1, u_t=x_1 - x_0)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_custom_path_times_outside_unit_interval_raise(bad):
    t = torch.tensor([0.2, bad, 0.5])
    with pytest.raises(FlowfieldsError, match=r"t: .*\[0, 1\]"):
        cfm_loss(lambda s, x: x, _AffinePath(), torch.zeros(3, 2), t=t)
    # in range: the custom path is used as given (u_t = x_1 - x_0)
    x_1, x_0 = torch.ones(3, 2), torch.zeros(3, 2)
    loss = cfm_loss(
        lambda s, x: torch.ones_like(x),
        _AffinePath(),
        x_1,
        x_0=x_0,
        t=t.clamp(0, 1).nan_to_num(0.3),
    )
    assert loss.item() == 0.0
