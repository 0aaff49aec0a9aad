"""DiffusionGFlowNet: the bridge is Brownian motion's exact posterior; marginals; bad input."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.gflownet import DiffusionGFlowNet


def _model(sigma: float = 0.7) -> DiffusionGFlowNet:
    torch.manual_seed(0)
    return DiffusionGFlowNet(2, 10, sigma, 16, 2).double()  # zero drift / correction at init


def test_brownian_motion_elbo_is_exact_log_likelihood() -> None:
    """With zero drift P_F is Brownian motion and the bridge its exact posterior, so
    log P_F(tau) - log P_B(tau | x) = log N(x; 0, sigma^2 I) for every trajectory."""
    m = _model()
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    xs = m.sample_backward(x, generator=g)
    assert torch.equal(xs[-1], x) and bool((xs[0] == 0).all())
    want = (-0.5 * (math.log(2 * math.pi * 0.49) + x.pow(2) / 0.49)).sum(-1)
    assert torch.allclose(m.elbo(xs), want, atol=1e-10)
    xs_f = m.sample(64, generator=g).double()
    want_f = (-0.5 * (math.log(2 * math.pi * 0.49) + xs_f[-1].pow(2) / 0.49)).sum(-1)
    assert torch.allclose(m.elbo(xs_f), want_f, atol=1e-10)
    # and TB is zero for R = Z N(0, sigma^2) with log Z learned exactly
    with torch.no_grad():
        m.log_z.fill_(1.3)
    assert float(m.tb_loss(xs_f, want_f + 1.3)) < 1e-18
    assert float(m.tb_loss(xs_f, want_f + 1.0)) == pytest.approx(0.09, abs=1e-9)


def test_bridge_marginals() -> None:
    """Seeded: x_k | x ~ N(t_k x, sigma^2 t_k (1 - t_k)); 20,000 draws, 4.5 SE."""
    m = _model(sigma=1.2)
    n = 20_000
    x = torch.tensor([[1.5, -0.5]], dtype=torch.float64).repeat(n, 1)
    xs = m.sample_backward(x, generator=torch.Generator().manual_seed(2))
    for k in (2, 5, 8):
        t = k / 10
        mean, var = t * x[0], 1.44 * t * (1 - t)
        got_mean, got_var = xs[k].mean(0), xs[k].var(0)
        assert float(((got_mean - mean).abs() / math.sqrt(var / n)).max()) < 4.5
        assert float(((got_var - var).abs() / (var * math.sqrt(2 / n))).max()) < 4.5


def test_bad_input() -> None:
    with pytest.raises(FlowfieldsError, match="sigma"):
        DiffusionGFlowNet(1, 10, sigma=0.0)
    with pytest.raises(FlowfieldsError, match="steps"):
        DiffusionGFlowNet(1, 1)
    m = DiffusionGFlowNet(1, 4)
    with pytest.raises(FlowfieldsError, match="xs"):
        m.log_probs(torch.zeros(3, 2, 1))
    with pytest.raises(FlowfieldsError, match="x"):
        m.sample_backward(torch.zeros(3, 2))


def test_tb_loss_refuses_bad_log_rewards() -> None:
    """``log R(x)`` must be finite (``R > 0``) and one per trajectory."""
    m = DiffusionGFlowNet(1, 4)
    xs = m.sample(3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FlowfieldsError, match="log_reward"):
        m.tb_loss(xs, torch.tensor([0.0, float("-inf"), 1.0]))  # R = 0 at one sample
    with pytest.raises(FlowfieldsError, match="log_reward"):
        m.tb_loss(xs, torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(FlowfieldsError, match="log_reward"):
        m.tb_loss(xs, torch.zeros(2))
    assert torch.isfinite(m.tb_loss(xs, torch.zeros(3)))
