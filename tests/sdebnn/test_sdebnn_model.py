"""SDEBNN / ODENet: shapes, the sigma -> 0 limit, adjoint vs backprop, reproducibility, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torchsde
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.sdebnn import (
    ESTIMATORS,
    SDEBNN,
    ODENet,
    PaddedBrownian,
    PosteriorDrift,
    WeightedMLP,
)

F64 = torch.float64
SMALL = dict(width=4, hidden=5, drift_hidden=(6,), steps=10)


def _perturb(net: nn.Module, std: float = 0.3, seed: int = 0) -> None:
    """Move the posterior away from the prior (the last layer starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.drift.net[-1].parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_shapes_and_gradients_reach_every_parameter(task: str, estimator: str) -> None:
    torch.manual_seed(0)
    net = SDEBNN(3, 2, task=task, estimator=estimator, **SMALL)
    _perturb(net)
    res = net(torch.randn(7, 3), n_samples=5)
    assert res.out.shape == (5, 7, 2) and res.kl.shape == (5,)
    assert bool((res.kl != 0).all())
    (res.out.square().mean() + res.kl.mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().max()) > 0, name


def test_weight_samples_differ_and_a_fixed_brownian_motion_repeats() -> None:
    torch.manual_seed(1)
    net = SDEBNN(2, 1, sigma=0.5, **SMALL)
    x = torch.randn(4, 2)
    bm = net.brownian_motion(3)
    a, b = net(x, 3, bm=bm).out, net(x, 3, bm=bm).out
    assert torch.equal(a, b)
    assert float((a[0] - a[1]).abs().max()) > 1e-4  # one network per weight path
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(net(x, 3, generator=g1).out, net(x, 3, generator=g2).out)


def test_small_sigma_limit_is_the_ode_net() -> None:
    """sigma -> 0: the SDE-BNN's Euler solve is the ODE net's (same weights, same grid)."""
    torch.manual_seed(2)
    sde_net = SDEBNN(3, 2, sigma=1e-9, **SMALL).double()
    _perturb(sde_net)
    ode_net = ODENet(3, 2, **SMALL).double()
    ode_net.load_state_dict(sde_net.state_dict())
    x = torch.randn(6, 3, dtype=F64)
    a, b = sde_net(x, n_samples=2).out, ode_net(x).out
    torch.testing.assert_close(a, b.expand_as(a), rtol=1e-7, atol=1e-7)


def test_adjoint_matches_direct_backprop() -> None:
    """Reversible Heun's adjoint is exact for the discretised SDE: same gradients (float64,
    fixed Brownian motion) to 1e-6 relative."""
    torch.manual_seed(3)
    kw = dict(width=4, hidden=5, drift_hidden=(6,), steps=25, sigma=0.4, method="reversible_heun")
    adj = SDEBNN(2, 2, adjoint=True, **kw).double()
    _perturb(adj)
    direct = SDEBNN(2, 2, adjoint=False, **kw).double()
    direct.load_state_dict(adj.state_dict())
    x = torch.randn(5, 2, dtype=F64)
    bm = adj.brownian_motion(3, dtype=F64)
    grads = []
    for net in (adj, direct):
        res = net(x, 3, bm=bm)
        loss = res.out.square().sum() + res.kl.sum()
        grads.append(torch.autograd.grad(loss, list(net.parameters())))
    for (name, _), ga, gd in zip(adj.named_parameters(), *grads, strict=True):
        scale = float(gd.abs().max())
        assert scale > 0, name
        assert float((ga - gd).abs().max()) <= 1e-6 * scale, name


def test_weighted_mlp_matches_a_per_sample_loop() -> None:
    torch.manual_seed(4)
    f = WeightedMLP(width=3, hidden=4)
    w = torch.randn(2, f.n_weights)
    h = torch.randn(2, 5, 3)
    out = f(0.25, h, w)
    w1, b1, w2, b2 = f.unpack(w)
    for s in range(2):
        inp = torch.cat([h[s], torch.full((5, 1), 0.25)], dim=-1)
        ref = torch.tanh(inp @ w1[s] + b1[s]) @ w2[s] + b2[s]
        torch.testing.assert_close(out[s], ref)
    assert f.n_weights == 4 * 4 + 4 + 4 * 3 + 3


def test_initial_weights_are_glorot_uniform() -> None:
    f = WeightedMLP(width=30, hidden=40)
    w1, b1, w2, b2 = f.unpack(f.initial_weights(torch.Generator().manual_seed(0)))
    bound = math.sqrt(6 / (31 + 40))
    assert float(w1.abs().max()) <= bound and float(w1.abs().max()) > 0.9 * bound
    assert float(b1.abs().max()) == 0 and float(b2.abs().max()) == 0
    assert abs(float(w2.var()) - (2 * math.sqrt(6 / 70)) ** 2 / 12) < 0.1 * float(w2.var())


def test_posterior_drift_starts_at_zero_but_learns() -> None:
    drift = PosteriorDrift(5, hidden=(3,))
    w = torch.randn(4, 5)
    out = drift(0.5, w)
    assert torch.equal(out, torch.zeros(4, 5))
    out.sum().backward()
    assert float(drift.net[-1].weight.grad.abs().max()) > 0


def test_padded_brownian_motion() -> None:
    base = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(2, 3), entropy=1)
    bm = PaddedBrownian(base, before=2, after=1)
    assert bm.shape == (2, 6)
    inc = bm(0.1, 0.4)
    assert torch.equal(inc[:, 2:5], base(0.1, 0.4))
    assert torch.equal(inc[:, [0, 1, 5]], torch.zeros(2, 3))


def test_ode_net_is_deterministic_and_has_zero_kl() -> None:
    torch.manual_seed(5)
    net = ODENet(3, 4, task="classification", **SMALL)
    x = torch.randn(6, 3)
    res = net(x, n_samples=3)
    assert res.out.shape == (3, 6, 4) and torch.equal(res.kl, torch.zeros(3))
    assert torch.equal(res.out[0], res.out[2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"theta": 0.0}, "theta"),
        ({"estimator": "elbo"}, "estimator"),
        ({"estimator": "stl", "adjoint": True}, "estimator"),
        ({"method": "milstein"}, "method"),
        ({"method": "euler", "adjoint": True}, "method"),
        ({"task": "ranking"}, "task"),
        ({"steps": 0}, "steps"),
        ({"width": 0}, "width"),
    ],
)
def test_bad_construction_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(FlowfieldsError, match=match):
        SDEBNN(2, 1, **{**SMALL, **kwargs})


def test_bad_forward_input_raises() -> None:
    net = SDEBNN(2, 1, **SMALL)
    with pytest.raises(FlowfieldsError, match="x"):
        net(torch.randn(4, 3))
    with pytest.raises(FlowfieldsError, match="x"):
        net(torch.randn(4))
    with pytest.raises(FlowfieldsError, match="non-finite"):
        net(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(FlowfieldsError, match="n_samples"):
        net(torch.randn(4, 2), n_samples=0)
    with pytest.raises(FlowfieldsError, match="bm"):
        net(torch.randn(4, 2), n_samples=2, bm=net.brownian_motion(3))
    with pytest.raises(FlowfieldsError, match="x"):
        ODENet(2, 1, **SMALL)(torch.randn(4, 5))
