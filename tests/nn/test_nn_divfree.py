"""Divergence-free networks: exact divergence against brute-force autograd Jacobians."""

from __future__ import annotations

import math

import pytest
import torch

from flowfields.errors import FlowfieldsError
from flowfields.integrate import ODEOptions
from flowfields.nn.divfree import DivFreeMatrixField, DivFreeVectorField, PeriodicFeatures

CLASSES = {"matrix": DivFreeMatrixField, "vector": DivFreeVectorField}


def _jacobian(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Brute force: (B, d, d) with J[b, i, j] = ∂v_i/∂x_j, one autograd call per output."""
    rows = [
        torch.autograd.grad(v[:, i].sum(), x, retain_graph=True, create_graph=True)[0]
        for i in range(v.shape[1])
    ]
    return torch.stack(rows, dim=1)


def _rowwise_divergence(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Brute force v_i = sum_j ∂_j A_ij for a (B, d, d) matrix field."""
    d = a.shape[-1]
    out = []
    for i in range(d):
        total = torch.zeros(a.shape[0], dtype=a.dtype)
        for j in range(d):
            total = total + torch.autograd.grad(a[:, i, j].sum(), x, create_graph=True)[0][:, j]
        out.append(total)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("precision", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim", [2, 3, 5, 10])
@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_divergence_zero_against_brute_force_jacobian(construction, dim, precision):
    model = CLASSES[construction](dim, hidden=32, depth=2).to(precision)
    x = torch.randn(6, dim, dtype=precision, requires_grad=True)
    v = model(x)
    jac = _jacobian(v, x)
    div = torch.diagonal(jac, dim1=1, dim2=2).sum(-1)
    scale = torch.linalg.matrix_norm(jac).max()
    assert scale > 1e-3  # a non-trivial field
    tol = 1e-10 if precision == torch.float64 else 1e-5
    assert (div.abs().max() / scale) < tol


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_matrix_field_is_rowwise_divergence_of_antisymmetric_matrix(dim, dtype):
    model = DivFreeMatrixField(dim, hidden=32, depth=2).to(dtype)
    x = torch.randn(5, dim, dtype=dtype, requires_grad=True)
    a = model.matrix(x)
    torch.testing.assert_close(a, -a.transpose(1, 2), rtol=0, atol=0)
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(model(x), _rowwise_divergence(a, x))


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_vector_field_is_divergence_of_jb_minus_jbt(dim, dtype):
    model = DivFreeVectorField(dim, hidden=32, depth=2).to(dtype)
    x = torch.randn(5, dim, dtype=dtype, requires_grad=True)
    jb = _jacobian(model.potential(x), x)
    a = jb - jb.transpose(1, 2)
    torch.testing.assert_close(model(x), _rowwise_divergence(a, x))


@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_jet_and_func_engines_agree(construction, dtype):
    kw = dict(hidden=32, depth=2, time_dependent=True, periodic=[True, False, True])
    jet = CLASSES[construction](3, **kw).to(dtype)
    func = CLASSES[construction](3, engine="func", **kw).to(dtype)
    func.load_state_dict(jet.state_dict())
    x = torch.randn(7, 3, dtype=dtype)
    t = torch.rand(7, dtype=dtype)
    torch.testing.assert_close(jet(t, x), func(t, x))


@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_periodic_field_is_periodic_and_divergence_free(construction, dtype):
    model = CLASSES[construction](2, hidden=32, depth=2, periodic=True).to(dtype)
    x = torch.rand(8, 2, dtype=dtype) * 2 * math.pi
    shift = torch.tensor([2 * math.pi, -4 * math.pi], dtype=dtype)
    torch.testing.assert_close(model(x), model(x + shift))
    xr = x.clone().requires_grad_()
    jac = _jacobian(model(xr), xr)
    div = torch.diagonal(jac, dim1=1, dim2=2).sum(-1)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert div.abs().max() < tol * torch.linalg.matrix_norm(jac).max()


def test_periodic_features_mask():
    feats = PeriodicFeatures(3, n_frequencies=2, periodic=[True, False, True])
    x = torch.randn(4, 3, dtype=torch.float64)
    out = feats(x)
    assert out.shape == (4, feats.out_features) == (4, 1 + 2 * 2 * 2)
    torch.testing.assert_close(out[:, 0], x[:, 1])
    torch.testing.assert_close(out[:, 1], torch.sin(x[:, 0]))
    torch.testing.assert_close(out[:, 4], torch.sin(2 * x[:, 2]))


def test_time_dependent_calling_conventions(dtype):
    model = DivFreeMatrixField(3, hidden=16, depth=2, time_dependent=True).to(dtype)
    x = torch.randn(4, 3, dtype=dtype)
    a = model(torch.tensor(0.3, dtype=dtype), x)
    torch.testing.assert_close(a, model(torch.full((4,), 0.3, dtype=dtype), x))
    torch.testing.assert_close(a, model(0.3, x))
    assert (a - model(0.9, x)).abs().max() > 1e-6  # really depends on t
    static = DivFreeMatrixField(3, hidden=16, depth=2).to(dtype)
    torch.testing.assert_close(static(x), static(0.5, x))  # v(t, x) convention, t ignored


@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_gradients_reach_every_parameter(construction):
    model = CLASSES[construction](3, hidden=16, depth=2, time_dependent=True)
    model(0.5, torch.randn(8, 3)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_core_divergence_and_cnf_see_zero_divergence(dtype):
    from flowfields.divergence import divergence_exact
    from flowfields.matching import CNF

    field = DivFreeMatrixField(3, hidden=16, depth=2, time_dependent=True).to(dtype)
    x = torch.randn(16, 3, dtype=dtype)
    for mode in ("reverse", "forward"):
        _, div = divergence_exact(field, 0.4, x, mode=mode)
        assert div.abs().max() < (1e-12 if dtype == torch.float64 else 1e-6)
    cnf = CNF(field, dim=3)
    out = cnf.log_prob_details(x, solver=ODEOptions("rk4", step_size=0.25))
    # volume preserving: log p_1(x) = log p_0(x_0) exactly
    assert out.delta_log_p.abs().max() < (1e-12 if dtype == torch.float64 else 1e-5)
    assert (out.x_0 - x).abs().max() > 1e-4


def test_dim_one_matrix_field_is_zero():
    model = DivFreeMatrixField(1, hidden=8, depth=1)
    assert model(torch.randn(3, 1)).abs().max() == 0


@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_bad_input_raises(construction):
    model = CLASSES[construction](3, hidden=8, depth=1)
    with pytest.raises(FlowfieldsError, match="x"):
        model(torch.randn(4, 2))
    with pytest.raises(FlowfieldsError, match="x"):
        model(torch.randn(4))
    bad = torch.randn(4, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(FlowfieldsError, match="non-finite"):
        model(bad)
    timed = CLASSES[construction](3, hidden=8, depth=1, time_dependent=True)
    with pytest.raises(FlowfieldsError, match="t"):
        timed(torch.randn(4, 3))
    with pytest.raises(FlowfieldsError, match="t"):
        timed(torch.rand(3), torch.randn(4, 3))
    with pytest.raises(FlowfieldsError, match="engine"):
        CLASSES[construction](3, engine="naive")
    with pytest.raises(FlowfieldsError, match="dim"):
        CLASSES[construction](0)
    with pytest.raises(FlowfieldsError, match="periodic"):
        CLASSES[construction](3, periodic=[True, False])


@pytest.mark.parametrize("dim", [2, 3])
def test_vector_field_hessian_jets_and_reverse_pass_agree(dim, dtype, monkeypatch):
    from flowfields.nn import divfree

    model = DivFreeVectorField(
        dim, hidden=16, depth=2, time_dependent=True, periodic=[True] + [False] * (dim - 1)
    ).to(dtype)
    x = torch.randn(6, dim, dtype=dtype)
    t = torch.rand(6, dtype=dtype)
    monkeypatch.setattr(divfree, "_HESSIAN_JETS_MAX_DIM", 100)
    forward_only = model(t, x)
    monkeypatch.setattr(divfree, "_HESSIAN_JETS_MAX_DIM", 0)
    torch.testing.assert_close(forward_only, model(t, x))


@pytest.mark.parametrize("precision", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim", [2, 3, 5])
@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_time_dependent_torus_field_divergence_zero(construction, dim, precision):
    """(t, x) variant on the flat torus: brute-force div in x is zero, and t really matters."""
    model = CLASSES[construction](dim, hidden=32, depth=2, time_dependent=True, periodic=True).to(
        precision
    )
    x = (2 * math.pi * torch.rand(6, dim, dtype=precision)).requires_grad_()
    t = torch.rand(6, dtype=precision)
    v = model(t, x)
    jac = _jacobian(v, x)
    div = torch.diagonal(jac, dim1=1, dim2=2).sum(-1)
    scale = torch.linalg.matrix_norm(jac).max()
    assert scale > 1e-3
    tol = 1e-10 if precision == torch.float64 else 1e-5
    assert (div.abs().max() / scale) < tol
    assert (v - model(t + 0.5, x)).abs().max() > 1e-4 * v.abs().max()


@pytest.mark.parametrize("construction", ["matrix", "vector"])
def test_vector_and_matrix_fields_as_cnf_preserve_volume(construction, dtype):
    from flowfields.matching import CNF

    field = CLASSES[construction](2, hidden=16, depth=2, time_dependent=True).to(dtype)
    x = torch.randn(12, 2, dtype=dtype)
    out = CNF(field, dim=2).log_prob_details(x, solver=ODEOptions("rk4", step_size=0.25))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert out.delta_log_p.abs().max() < tol
    assert (out.x_0 - x).abs().max() > 1e-4
