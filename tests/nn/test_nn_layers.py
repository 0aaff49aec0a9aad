"""The one MLP builder and activation table: layout, seeded initialisation, jets of every
activation, and the time-broadcast helper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowfields.errors import FlowfieldsError
from flowfields.nn import (
    ACTIVATIONS,
    DivFreeMatrixField,
    DivFreeVectorField,
    MLPField,
    PeriodicFeatures,
    activation,
    broadcast_time,
    mlp,
)

F64 = torch.float64


def _manual(n_in: int, n_out: int | None, hidden: int, depth: int, act: type, bias=True):
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    if n_out is not None:
        layers.append(nn.Linear(width, n_out, bias=bias))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("n_out, bias", [(3, True), (1, False), (None, True)])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_mlp_equals_the_hand_built_network_under_the_same_seed(n_out, bias, name) -> None:
    """Same layers, same order, same state_dict keys and the same seeded weights as the
    builders it replaced (divfree's trunk, the conservation MLPs, MLPField)."""
    torch.manual_seed(3)
    ours = mlp(5, n_out, 16, 3, name, bias_out=bias)
    torch.manual_seed(3)
    ref = _manual(5, n_out, 16, 3, ACTIVATIONS[name], bias)
    assert [type(m) for m in ours] == [type(m) for m in ref]
    sd, rd = ours.state_dict(), ref.state_dict()
    assert list(sd) == list(rd)
    for key in sd:
        assert torch.equal(sd[key], rd[key]), key
    x = torch.randn(7, 5)
    assert torch.equal(ours(x), ref(x))


def test_mlp_expresses_the_periodic_fluid_mlp() -> None:
    """The Taylor–Green experiment's network: periodic features of x and t, then an MLP."""
    features = PeriodicFeatures(2, 2)
    torch.manual_seed(0)
    net = mlp(features.out_features + 1, 3, 32, 3, "silu")
    torch.manual_seed(0)
    ref = _manual(features.out_features + 1, 3, 32, 3, nn.SiLU)
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values())
    )


def test_mlpfield_is_built_by_mlp() -> None:
    torch.manual_seed(1)
    field = MLPField(2, hidden=8, depth=2, time_embed_dim=4, activation="tanh")
    torch.manual_seed(1)
    ref = _manual(2 + 4, 2, 8, 2, nn.Tanh)
    for a, b in zip(field.net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"activation": "relu"}, "activation"),
        ({"depth": 0}, "depth"),
        ({"hidden": 0}, "hidden"),
        ({"n_out": 0}, "n_out"),
        ({"n_in": 2.0}, "n_in"),
    ],
)
def test_mlp_bad_input(kwargs: dict, fragment: str) -> None:
    args = {"n_in": 2, "n_out": 2, "hidden": 4, "depth": 1, **kwargs}
    with pytest.raises(FlowfieldsError, match=fragment):
        mlp(**args)


def test_activation_table_is_the_one_every_network_accepts() -> None:
    for name, cls in ACTIVATIONS.items():
        assert isinstance(activation(name), cls)
        MLPField(2, hidden=4, depth=1, activation=name)
        DivFreeMatrixField(2, hidden=4, depth=1, activation=name)
    with pytest.raises(FlowfieldsError, match="relu"):
        activation("relu")
    for build in (MLPField, DivFreeMatrixField, DivFreeVectorField):
        with pytest.raises(FlowfieldsError, match="activation"):
            build(2, hidden=4, depth=1, activation="relu")


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("cls", [DivFreeMatrixField, DivFreeVectorField])
def test_divfree_jets_of_every_listed_activation_match_torch_func(cls, name: str) -> None:
    """The hand-written jets (first and second derivatives of the activation, gelu included,
    which the docstring listed but the constructor used to refuse) against torch.func."""
    torch.manual_seed(0)
    jet = cls(3, hidden=16, depth=2, activation=name, engine="jet").to(F64)
    ref = cls(3, hidden=16, depth=2, activation=name, engine="func").to(F64)
    ref.load_state_dict(jet.state_dict())
    x = torch.randn(9, 3, dtype=F64)
    torch.testing.assert_close(jet(x), ref(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "t, expected",
    [
        (0.25, [0.25] * 4),
        (torch.tensor(0.5), [0.5] * 4),
        (torch.tensor([0.75]), [0.75] * 4),
        (torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64), [0.1, 0.2, 0.3, 0.4]),
        (1, [1.0] * 4),
    ],
)
def test_broadcast_time(t, expected) -> None:
    x = torch.zeros(4, 3)
    out = broadcast_time(t, x)
    assert out.shape == (4,) and out.dtype == x.dtype
    torch.testing.assert_close(out, torch.tensor(expected))
    with pytest.raises(FlowfieldsError, match="t"):
        broadcast_time(torch.zeros(3), x)
    with pytest.raises(FlowfieldsError, match="t"):
        broadcast_time("0.5", x)
