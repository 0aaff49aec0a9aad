"""Vector-field networks: MLPField, UNet, TimeEmbedding and the v(t, x) adapter."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn
from torch.func import jacrev, vmap

from flowfields.errors import FlowfieldsError
from flowfields.nn import (
    ACTIVATIONS,
    Field,
    MLPField,
    TimeEmbedding,
    UNet,
    activation,
    as_field,
    broadcast_time,
)

F64 = torch.float64


def _mlp(dtype: torch.dtype = F64, act: str = "silu") -> MLPField:
    return MLPField(3, hidden=32, depth=3, time_embed_dim=8, activation=act).to(dtype)


def _unet(size: int, dtype: torch.dtype = torch.float32) -> UNet:
    return UNet(1, size, base_channels=8, channel_mults=(1, 2), time_embed_dim=16, groups=4).to(
        dtype
    )


def _time_forms(b: int, dtype: torch.dtype) -> list:
    return [
        0.3,
        torch.tensor(0.3, dtype=dtype),
        torch.tensor([0.3], dtype=dtype),
        torch.full((b,), 0.3, dtype=dtype),
    ]


# ---- MLPField --------------------------------------------------------------------------------


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_mlp_shape_dtype_and_time_dependence(act: str, dtype: torch.dtype) -> None:
    v = _mlp(dtype, act)
    x = torch.randn(5, 3, dtype=dtype)
    out = v(0.2, x)
    assert out.shape == (5, 3) and out.dtype == dtype
    assert (out - v(0.8, x)).abs().max() > 1e-4  # depends on time


def test_mlp_time_broadcast_forms_agree() -> None:
    v = _mlp()
    x = torch.randn(6, 3, dtype=F64)
    outs = [v(t, x) for t in _time_forms(6, F64)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=0)


def test_mlp_per_example_time() -> None:
    v = _mlp()
    x = torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
    out = v(t, x)
    for i in range(4):
        torch.testing.assert_close(out[i], v(t[i], x[i : i + 1])[0], rtol=1e-14, atol=1e-14)


def test_mlp_gradients_reach_every_parameter() -> None:
    v = _mlp()
    loss = v(torch.rand(16, dtype=F64), torch.randn(16, 3, dtype=F64)).pow(2).sum()
    loss.backward()
    for name, p in v.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mlp_jacobian_matches_finite_differences_and_second_derivatives() -> None:
    v = _mlp()
    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    t = torch.tensor(0.4, dtype=F64)
    # float64 gradcheck (first derivatives) and gradgradcheck (smooth: second derivatives)
    assert torch.autograd.gradcheck(lambda z: v(t, z), (x,))
    assert torch.autograd.gradgradcheck(lambda z: v(t, z), (x,))


def test_mlp_works_under_vmap_jacrev() -> None:
    # the batched-Jacobian pattern flowfields.divergence uses: vmap over examples of jacrev
    v = _mlp()
    x = torch.randn(5, 3, dtype=F64)
    t = torch.rand(5, dtype=F64)

    def single(ti: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return v(ti, xi[None])[0]

    jac = vmap(jacrev(single, argnums=1))(t, x)
    ref = torch.stack(
        [torch.autograd.functional.jacobian(lambda z, i=i: single(t[i], z), x[i]) for i in range(5)]
    )
    torch.testing.assert_close(jac, ref, rtol=1e-12, atol=1e-12)


def test_mlp_state_dict_round_trip() -> None:
    v = _mlp(torch.float32)
    buf = io.BytesIO()
    torch.save(v.state_dict(), buf)
    w = _mlp(torch.float32)
    x = torch.randn(7, 3)
    assert not torch.equal(v(0.5, x), w(0.5, x))
    buf.seek(0)
    w.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(v(0.5, x), w(0.5, x))


def test_mlp_bad_input() -> None:
    v = _mlp()
    with pytest.raises(FlowfieldsError, match="x"):
        v(0.5, torch.randn(4, 2, dtype=F64))  # wrong dim
    with pytest.raises(FlowfieldsError, match="x"):
        v(0.5, torch.randn(4, 3, 1, dtype=F64))
    with pytest.raises(FlowfieldsError, match="t"):
        v(torch.rand(3, dtype=F64), torch.randn(4, 3, dtype=F64))  # wrong t length
    with pytest.raises(FlowfieldsError, match="t"):
        v(torch.rand(4, 1, dtype=F64), torch.randn(4, 3, dtype=F64))
    with pytest.raises(FlowfieldsError, match="activation"):
        MLPField(2, activation="relu")
    with pytest.raises(FlowfieldsError, match="depth"):
        MLPField(2, depth=0)
    with pytest.raises(FlowfieldsError, match="dim"):
        MLPField(2, time_embed_dim=7)


# ---- TimeEmbedding, broadcast_time, as_field --------------------------------------------------


def test_time_embedding_closed_form() -> None:
    emb = TimeEmbedding(6, min_frequency=1.0, max_frequency=100.0).double()
    w = torch.tensor([1.0, 10.0, 100.0], dtype=F64)  # geometric: 1, 10, 100
    # stored in torch's default dtype (float32), so equal to float32 precision
    torch.testing.assert_close(emb.frequencies, w, rtol=1e-6, atol=0)
    w = emb.frequencies
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    ref = torch.cat([torch.sin(t[:, None] * w), torch.cos(t[:, None] * w)], dim=-1)
    torch.testing.assert_close(emb(t), ref, rtol=1e-12, atol=1e-12)
    assert emb(torch.tensor([math.pi / 2], dtype=F64))[0, 0] == 1.0


def test_broadcast_time() -> None:
    x = torch.zeros(4, 2, dtype=F64)
    for t in _time_forms(4, torch.float32):
        out = broadcast_time(t, x)
        assert out.shape == (4,) and out.dtype == F64
        torch.testing.assert_close(out, torch.full((4,), 0.3, dtype=F64), rtol=1e-7, atol=0)
    with pytest.raises(FlowfieldsError, match="t"):
        broadcast_time("0.5", x)
    with pytest.raises(FlowfieldsError, match=r"\(4,\)"):
        broadcast_time(torch.zeros(2), x)


def test_as_field_adapts_calling_conventions() -> None:
    lin = nn.Linear(3, 3).double()
    x = torch.randn(5, 3, dtype=F64)

    class XT(nn.Module):  # forward(x, t) with t of shape (B,)
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            assert t.shape == (x.shape[0],)
            return self.lin(x) * t[:, None]

    v = as_field(XT(), order="xt")
    assert isinstance(v, Field) and len(list(v.parameters())) == 2
    torch.testing.assert_close(v(0.5, x), lin(x) * 0.5, rtol=0, atol=0)
    auto = as_field(lin, time="none")
    torch.testing.assert_close(auto(0.9, x), lin(x), rtol=0, atol=0)
    scal = as_field(lambda t, z: z * t, time="scalar")
    torch.testing.assert_close(scal(torch.tensor(2.0, dtype=F64), x), 2 * x)
    with pytest.raises(FlowfieldsError, match="scalar"):
        scal(torch.ones(5, dtype=F64), x)
    m = _mlp()
    assert as_field(m) is m  # already v(t, x)
    with pytest.raises(FlowfieldsError, match="order"):
        as_field(lin, order="yx")
    with pytest.raises(FlowfieldsError, match="activation"):
        activation("relu")


# ---- UNet ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 28])
def test_unet_shape_time_dependence_and_per_example(size: int) -> None:
    net = _unet(size).eval()
    x = torch.randn(3, 1, size, size)
    t = torch.tensor([0.1, 0.5, 0.9])
    out = net(t, x)
    assert out.shape == x.shape
    assert (out - net(0.7, x)).abs().max() > 1e-4
    # GroupNorm is per example: example i depends only on (t_i, x_i)
    torch.testing.assert_close(out[1:2], net(t[1], x[1:2]), rtol=1e-5, atol=1e-5)
    for form in _time_forms(3, torch.float32):
        torch.testing.assert_close(net(form, x), net(0.3, x), rtol=0, atol=0)


def test_unet_gradients_reach_every_parameter_float64() -> None:
    net = _unet(8, F64)
    out = net(torch.rand(4, dtype=F64), torch.randn(4, 1, 8, 8, dtype=F64))
    assert out.dtype == F64
    out.pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unet_default_and_other_layouts() -> None:
    x = torch.randn(2, 3, 8, 8)
    net = UNet(3, 8, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=2)
    assert net(0.5, x).shape == x.shape
    assert UNet()(0.5, torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)


def test_unet_state_dict_round_trip() -> None:
    a, b = _unet(8), _unet(8)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(a(0.3, x), b(0.3, x))


def test_unet_bad_input() -> None:
    net = _unet(8)
    with pytest.raises(FlowfieldsError, match=r"\(B, 1, 8, 8\)"):
        net(0.5, torch.randn(2, 1, 28, 28))
    with pytest.raises(FlowfieldsError, match=r"\(B, 1, 8, 8\)"):
        net(0.5, torch.randn(2, 8, 8))
    with pytest.raises(FlowfieldsError, match="t"):
        net(torch.rand(3), torch.randn(2, 1, 8, 8))
    with pytest.raises(FlowfieldsError, match="image_size"):
        UNet(1, 28, channel_mults=(1, 2, 2, 2))  # 28 is not a multiple of 8


def test_fields_on_device(device: torch.device) -> None:
    v = _mlp(torch.float32).to(device)
    assert v(0.5, torch.randn(4, 3, device=device)).device == torch.device(device)
    net = _unet(8).to(device)
    x = torch.randn(2, 1, 8, 8, device=device)
    assert net(torch.rand(2, device=device), x).device == x.device
