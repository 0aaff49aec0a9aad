"""ConditionalCPFlow: log-det of the composed map against autograd, inverse, context use."""

from __future__ import annotations

import pytest
import torch

from flowfields.cpflow import ConditionalCPFlow
from flowfields.errors import FlowfieldsError

F64 = torch.float64


def _flow(seed: int = 0) -> ConditionalCPFlow:
    torch.manual_seed(seed)
    return ConditionalCPFlow(3, 4, blocks=2, hidden=12, depth=2).double()


def test_logdet_equals_slogdet_of_composed_jacobian() -> None:
    flow = _flow()
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(5, 3, generator=g, dtype=F64)
    c = torch.randn(5, 4, generator=g, dtype=F64)
    with torch.no_grad():
        z, ld = flow(z0, c)
    for i in range(5):
        J = torch.autograd.functional.jacobian(
            lambda u, i=i: flow(u[None], c[i : i + 1])[0][0], z0[i]
        )
        sign, ref = torch.linalg.slogdet(J)
        assert float(sign) == 1.0
        assert abs(float(ld[i]) - float(ref)) < 1e-10
    assert z.shape == (5, 3)


def test_inverse_round_trip_and_context_matters() -> None:
    flow = _flow()
    g = torch.Generator().manual_seed(2)
    z0 = torch.randn(16, 3, generator=g, dtype=F64)
    c = torch.randn(16, 4, generator=g, dtype=F64)
    with torch.no_grad():
        z, _ = flow(z0, c)
        back = flow.inverse(z, c)
        z_other, _ = flow(z0, c.flip(0))
    assert back.converged
    assert float((back.x - z0).abs().max()) < 1e-8
    assert float((z_other - z).abs().max()) > 1e-3


def test_gradient_reaches_context_and_parameters() -> None:
    flow = _flow()
    z0 = torch.randn(4, 3, dtype=F64)
    c = torch.randn(4, 4, dtype=F64, requires_grad=True)
    z, ld = flow(z0, c)
    (z.sum() + ld.sum()).backward()
    assert c.grad is not None and float(c.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in flow.parameters())


def test_bad_input_raises() -> None:
    with pytest.raises(FlowfieldsError, match="blocks"):
        ConditionalCPFlow(2, 3, blocks=0)
    flow = _flow()
    with pytest.raises(FlowfieldsError, match="method"):
        flow(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, dtype=F64), "lu")
    with pytest.raises(FlowfieldsError, match="context"):
        flow(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 5, dtype=F64))
