"""Input-convex networks: convexity (chord test, Hessian PSD), activations, ActNorm, errors."""

from __future__ import annotations

import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm

from flowfields.errors import FlowfieldsError
from flowfields.nn import (
    ICNN,
    PICNN,
    ActNorm,
    PositiveLinear,
    convex_activation,
    gaussian_softplus,
)

F64 = torch.float64


def _init(net: torch.nn.Module, *args: torch.Tensor) -> torch.nn.Module:
    """Run one training-mode pass so every ActNorm is data-initialised, then eval."""
    net.train()
    net(*args)
    return net.eval()


def _chord_gap(fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(F(x) + F(y)) / 2 - F((x + y) / 2)``: >= 0 for every pair iff F is midpoint convex."""
    with torch.no_grad():
        return 0.5 * (fn(x) + fn(y)) - fn(0.5 * (x + y))


@pytest.mark.parametrize("activation", ["softplus", "gaussian_softplus"])
@pytest.mark.parametrize("augment", [True, False])
def test_icnn_chord_test_and_concave_control(activation: str, augment: bool) -> None:
    torch.manual_seed(0)
    G = _init(
        ICNN(3, hidden=16, depth=3, activation=activation, augment=augment).double(),
        2 * torch.randn(256, 3, dtype=F64),
    )
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(4000, 3, generator=g, dtype=F64)
    y = 3 * torch.randn(4000, 3, generator=g, dtype=F64)
    assert float(_chord_gap(G, x, y).min()) >= -1e-10
    # the test has power: the concave -G fails it on the same pairs
    assert float(_chord_gap(lambda z: -G(z), x, y).min()) < -1e-3


def test_picnn_convex_in_x_for_fixed_context_not_in_context() -> None:
    torch.manual_seed(2)
    P = PICNN(2, 3, hidden=16, depth=3).double()
    g = torch.Generator().manual_seed(3)
    x, y = (2 * torch.randn(3000, 2, generator=g, dtype=F64) for _ in range(2))
    c = torch.randn(3000, 3, generator=g, dtype=F64)
    assert float(_chord_gap(lambda z: P(z, c), x, y).min()) >= -1e-10
    # control: in the context it is not convex (the chord test does fail on some pair)
    c2 = 3 * torch.randn(3000, 3, generator=g, dtype=F64)
    with torch.no_grad():
        gap_c = 0.5 * (P(x, c) + P(x, c2)) - P(x, 0.5 * (c + c2))
    assert float(gap_c.min()) < 0


def test_icnn_hessian_is_psd_float64() -> None:
    torch.manual_seed(4)
    G = _init(ICNN(4, hidden=12, depth=3).double(), torch.randn(128, 4, dtype=F64))
    for k in range(10):
        x = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(k)) * 2
        H = torch.autograd.functional.hessian(lambda z: G(z[None])[0], x)
        assert torch.allclose(H, H.T, atol=1e-12)
        assert float(torch.linalg.eigvalsh(H).min()) >= -1e-10


def test_icnn_gradcheck() -> None:
    torch.manual_seed(5)
    G = _init(ICNN(2, hidden=6, depth=2).double(), torch.randn(32, 2, dtype=F64))
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(G, (x,))
    assert torch.autograd.gradgradcheck(G, (x,))


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


def _autograd_derivatives(fn, x: torch.Tensor, *ctx: torch.Tensor):
    grad = torch.func.vmap(torch.func.grad(lambda z, *c: fn(z[None], *(t[None] for t in c))[0]))
    hess = torch.func.vmap(torch.func.hessian(lambda z, *c: fn(z[None], *(t[None] for t in c))[0]))
    return fn(x, *ctx), grad(x, *ctx), hess(x, *ctx)


@pytest.mark.parametrize("activation", ["softplus", "gaussian_softplus"])
@pytest.mark.parametrize("augment", [True, False])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_icnn_closed_form_derivatives_match_autograd_float64(
    activation: str, augment: bool, depth: int
) -> None:
    """The hand-written value / gradient / Hessian sweeps equal nested autograd to 1e-12, with
    perturbed (non-initial) weights and trained-mode ActNorm scales."""
    torch.manual_seed(depth)
    x = torch.randn(9, 5, dtype=F64)
    G = _init(ICNN(5, hidden=10, depth=depth, activation=activation, augment=augment).double(), x)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.5 * torch.randn_like(p))
    val, grad, hess = G.derivatives(x)
    v0, g0, h0 = _autograd_derivatives(G, x)
    assert hess is not None
    assert _maxdiff(val, v0) < 1e-12
    assert _maxdiff(grad, g0) < 1e-12
    assert _maxdiff(hess, h0) < 1e-12
    assert float(h0.detach().abs().max()) > 1e-3  # a non-trivial Hessian was compared
    # the θ-gradient of a function of the closed-form Hessian equals the autograd one
    params = list(G.parameters())
    a = torch.autograd.grad(torch.logdet(hess + torch.eye(5, dtype=F64)).sum(), params)
    b = torch.autograd.grad(
        torch.logdet(_autograd_derivatives(G, x)[2] + torch.eye(5, dtype=F64)).sum(), params
    )
    assert max(_maxdiff(u, w) for u, w in zip(a, b, strict=True)) < 1e-10
    assert G.derivatives(x, hessian=False)[2] is None


def test_picnn_closed_form_derivatives_match_autograd_float64() -> None:
    torch.manual_seed(3)
    x, c = torch.randn(7, 4, dtype=F64), torch.randn(7, 3, dtype=F64)
    G = _init(PICNN(4, 3, hidden=8, depth=3).double(), x, c)  # ActNorm scales set from data
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.3 * torch.randn_like(p))
    val, grad, hess = G.derivatives(x, c)
    v0, g0, h0 = _autograd_derivatives(G, x, c)
    assert hess is not None
    assert _maxdiff(val, v0) < 1e-12
    assert _maxdiff(grad, g0) < 1e-12
    assert _maxdiff(hess, h0) < 1e-12
    assert float(h0.detach().abs().max()) > 1e-4
    with pytest.raises(FlowfieldsError, match="context"):
        G.derivatives(x, c[:3])


@pytest.mark.parametrize("conditional", [False, True])
def test_closed_form_hvp_matches_hessian_and_its_parameter_gradient(conditional: bool) -> None:
    """``sweep(x).hvp(v)`` (forward tangent + reverse sweep, no autograd graph of ∇G) equals
    the autograd Hessian times v to 1e-12, and its θ-gradient (what the CG surrogate
    differentiates) equals the θ-gradient of ``vᵀ ∇²G v`` from nested autograd."""
    torch.manual_seed(5)
    x, c, v = (
        torch.randn(6, 4, dtype=F64),
        torch.randn(6, 3, dtype=F64),
        torch.randn(6, 4, dtype=F64),
    )
    G = PICNN(4, 3, hidden=8, depth=3) if conditional else ICNN(4, hidden=10, depth=3)
    ctx = (c,) if conditional else ()
    G = _init(G.double(), x, *ctx)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.3 * torch.randn_like(p))
    sw = G.sweep(x, *ctx)
    Hv = sw.hvp(v)
    h0 = _autograd_derivatives(G, x, *ctx)[2]
    ref = torch.einsum("bij,bj->bi", h0, v)
    assert _maxdiff(Hv, ref) < 1e-12
    assert float(ref.detach().abs().max()) > 1e-3
    params = list(G.parameters())
    a = torch.autograd.grad((v * Hv).sum(), params)
    b = torch.autograd.grad((v * ref).sum(), params)
    assert max(_maxdiff(u, w) for u, w in zip(a, b, strict=True)) < 1e-10


def test_gaussian_softplus_closed_form_and_derivative() -> None:
    x = torch.linspace(-6, 6, 101, dtype=F64)
    want = x.numpy() * norm.cdf(x.numpy()) + norm.pdf(x.numpy())
    assert torch.allclose(gaussian_softplus(x), torch.from_numpy(want), atol=1e-14)
    # it is the integral of the Gaussian CDF (scipy quadrature): E[relu(x + eps)]
    for t in (-3.0, -0.5, 0.0, 1.2, 4.0):
        ref = quad(norm.cdf, -40.0, t, epsabs=1e-13, epsrel=1e-13)[0]
        assert abs(float(gaussian_softplus(torch.tensor(t, dtype=F64))) - ref) < 1e-10
    xg = torch.randn(7, dtype=F64, requires_grad=True)
    (d,) = torch.autograd.grad(gaussian_softplus(xg).sum(), xg)
    assert torch.allclose(d, torch.from_numpy(norm.cdf(xg.detach().numpy())), atol=1e-14)
    assert torch.autograd.gradgradcheck(gaussian_softplus, (xg,))


def test_positive_linear_stays_non_negative_after_steps() -> None:
    layer = PositiveLinear(5, 3)
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.ones(2, 5)).sum().backward()  # pushes every weight down hard
        opt.step()
    assert bool((layer.weight >= 0).all())


def test_actnorm_data_init_inverse_and_logdet() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(500, 3, generator=g, dtype=F64) * torch.tensor([0.5, 2.0, 3.0]) + 1.0
    a = ActNorm(3).double()
    y = a(x)
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=F64), atol=1e-12)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(3, dtype=F64), atol=1e-12)
    assert torch.allclose(a.inverse(y), x, atol=1e-12)
    J = torch.autograd.functional.jacobian(lambda z: a(z[None])[0], x[0])
    assert abs(float(torch.linalg.slogdet(J).logabsdet - a.log_det().detach())) < 1e-12
    y2 = a(x * 2)  # initialised once: a second batch does not re-initialise
    assert not torch.allclose(y2.std(0), torch.ones(3, dtype=F64), atol=1e-3)
    b = ActNorm(3).double()
    b.load_state_dict(a.state_dict())
    assert bool(b.initialized)


def test_bad_input_raises() -> None:
    for name in ("tanh", "silu", "relu", 3):
        with pytest.raises(FlowfieldsError, match="activation"):
            convex_activation(name)  # type: ignore[arg-type]
    with pytest.raises(FlowfieldsError, match="activation"):
        ICNN(2, activation="tanh")
    with pytest.raises(FlowfieldsError, match="dim"):
        ICNN(0)
    with pytest.raises(FlowfieldsError, match="hidden"):
        ICNN(2, hidden=1, augment=True)
    with pytest.raises(FlowfieldsError, match="context"):
        PICNN(2, 3, hidden=4, depth=2)(torch.randn(5, 2), torch.randn(5, 2))
