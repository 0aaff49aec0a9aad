"""Mean-field VI layers against torch.distributions; deep ensembles; the VI-MLP's shapes."""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal, kl_divergence

from flowfields.sdebnn import BayesLinear, DeepEnsemble, MeanFieldMLP, ODENet

F64 = torch.float64


def test_bayes_linear_kl_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    layer = BayesLinear(3, 2, prior_std=0.7, init_std=0.2).double()
    with torch.no_grad():
        layer.weight_rho.normal_(-1, 0.3)
    ref = 0.0
    for mu, rho in ((layer.weight_mu, layer.weight_rho), (layer.bias_mu, layer.bias_rho)):
        q = Normal(mu, torch.nn.functional.softplus(rho))
        ref += float(kl_divergence(q, Normal(torch.zeros_like(mu), 0.7)).sum())
    assert abs(float(layer.kl()) - ref) < 1e-10


def test_local_reparameterisation_has_the_weight_space_moments() -> None:
    """Pre-activations ~ N(x mu_W + mu_b, x² s_W² + s_b²): 20000 draws, 4-SE z-tests."""
    torch.manual_seed(1)
    layer = BayesLinear(2, 1, init_std=0.5).double()
    x = torch.tensor([[1.5, -2.0]], dtype=F64)
    draws = layer(x.expand(20000, 1, 2))[:, 0, 0]
    s = torch.nn.functional.softplus(layer.weight_rho.detach())[:, 0]
    sb = torch.nn.functional.softplus(layer.bias_rho.detach())[0]
    mean = float(x[0] @ layer.weight_mu.detach()[:, 0] + layer.bias_mu.detach()[0])
    var = float((x[0] ** 2 * s**2).sum() + sb**2)
    n = draws.numel()
    assert abs(float(draws.mean()) - mean) < 4 * math.sqrt(var / n)
    assert abs(float(draws.var()) / var - 1) < 4 * math.sqrt(2 / n)


def test_mean_field_mlp_output_and_kl() -> None:
    torch.manual_seed(2)
    mlp = MeanFieldMLP(3, 4, widths=(5, 6))
    res = mlp(torch.randn(7, 3), n_samples=8)
    assert res.out.shape == (8, 7, 4) and res.kl.shape == (8,)
    assert float(res.kl[0]) == float(sum(layer.kl() for layer in mlp.layers))
    assert float((res.out[0] - res.out[1]).abs().max()) > 0


def test_deep_ensemble_stacks_its_members() -> None:
    torch.manual_seed(3)
    members = [ODENet(3, 2, width=4, hidden=4, drift_hidden=(4,), steps=4) for _ in range(3)]
    ens = DeepEnsemble(members)
    x = torch.randn(5, 3)
    res = ens(x)
    assert res.out.shape == (3, 5, 2)
    for i, m in enumerate(members):
        torch.testing.assert_close(res.out[i], m(x).out[0])
