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


@pytest.mark.parametrize("actnorm", [True, False])
def test_conditional_block_starts_with_point_dependent_curvature(actnorm: bool) -> None:
    """At the cpflow-vi sizes a data-initialised PICNN block has a Hessian that varies from
    point to point (sd of log det ∇²F over the batch 0.074 at seed 0; threshold 0.03).
    Without the PICNN's ActNorm (the control) it is 0.0003 (< 0.005): the conditional
    flow starts as an affine map (why cpflow-vi's CP-Flow posterior tied the Gaussian,
    17.601 vs 17.601). Contexts near 0, as an untrained encoder's tanh features are."""
    from flowfields.cpflow import ConvexPotentialBlock

    torch.manual_seed(0)
    blk = ConvexPotentialBlock(8, 32, 3, context_dim=32, actnorm=actnorm).double()
    g = torch.Generator().manual_seed(3)
    z = 2 * torch.randn(256, 8, generator=g, dtype=F64)
    c = torch.tanh(0.1 * torch.randn(256, 32, generator=g, dtype=F64))
    with torch.no_grad():
        _, ld = blk.forward_logdet(z, "exact", context=c)  # training mode: data init
    spread = float(ld.std())
    if actnorm:
        assert spread > 0.03
    else:
        assert spread < 0.005


def test_actnorm_layout_standardises_block_inputs_and_enters_the_logdet() -> None:
    """K + 1 ActNorms (before every block, after the last), data-initialised on the first
    training batch: the first block's input is standardised per feature; the log-det of the
    whole map is the blocks' log det ∇²F plus every ActNorm's Σ s. Control: actnorm=False
    has no ActNorm and the log-det is the blocks' alone."""
    from flowfields.nn import ActNorm

    flow = _flow()
    assert sum(isinstance(n, ActNorm) for n in flow.norms) == 3
    g = torch.Generator().manual_seed(4)
    z0 = 3.0 + 2.0 * torch.randn(64, 3, generator=g, dtype=F64)
    c = torch.randn(64, 4, generator=g, dtype=F64)
    with torch.no_grad():
        _, ld = flow(z0, c)  # training mode: the data init
        x1, x2 = flow.block_inputs(z0, c)
        blocks = [
            b.forward_logdet(x, "exact", context=c)[1] for b, x in zip(flow._blocks(), (x1, x2))
        ]
    assert torch.allclose(x1.mean(0), torch.zeros(3, dtype=F64), atol=1e-10)
    assert torch.allclose(x1.std(0, unbiased=False), torch.ones(3, dtype=F64), atol=1e-10)
    norms = sum(float(n.log_det().detach()) for n in flow.norms)
    assert abs(norms) > 0.1  # the init moved the scales (z0 has sd 2)
    assert torch.allclose(ld, blocks[0] + blocks[1] + norms, atol=1e-10)
    torch.manual_seed(0)
    plain = ConditionalCPFlow(3, 4, blocks=2, hidden=12, depth=2, actnorm=False).double()
    assert not any(isinstance(n, ActNorm) for n in plain.norms)
    with torch.no_grad():
        _, ld_plain = plain(z0, c)
        x = z0
        ref = torch.zeros(64, dtype=F64)
        for b in plain._blocks():
            x, ld_b = b.forward_logdet(x, "exact", context=c)
            ref = ref + ld_b
    assert torch.allclose(ld_plain, ref, atol=1e-12)


def test_bad_input_raises() -> None:
    with pytest.raises(FlowfieldsError, match="blocks"):
        ConditionalCPFlow(2, 3, blocks=0)
    with pytest.raises(FlowfieldsError, match="actnorm"):
        ConditionalCPFlow(2, 3, actnorm="yes")  # type: ignore[arg-type]
    flow = _flow()
    with pytest.raises(FlowfieldsError, match="method"):
        flow(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, dtype=F64), "lu")
    with pytest.raises(FlowfieldsError, match="context"):
        flow(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 5, dtype=F64))
