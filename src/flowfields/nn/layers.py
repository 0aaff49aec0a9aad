"""The one activation table and the one MLP builder every network in flowfields uses.

:data:`ACTIVATIONS` lists the smooth activations (second derivatives exist everywhere, as CNF
likelihoods, divergence-based losses and divergence-free fields need); :func:`activation`
builds one by name and :func:`mlp` stacks ``Linear`` / activation pairs.

Example:
    >>> import torch
    >>> from flowfields.nn import mlp
    >>> net = mlp(3, 2, hidden=16, depth=2)
    >>> net(torch.randn(5, 3)).shape
    torch.Size([5, 2])
    >>> [type(m).__name__ for m in net]
    ['Linear', 'SiLU', 'Linear', 'SiLU', 'Linear']
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from flowfields.errors import FlowfieldsError, check

__all__ = ["ACTIVATIONS", "activation", "mlp"]

#: Smooth activations (second derivatives exist everywhere), by name.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    """A fresh smooth activation module by name: one of :data:`ACTIVATIONS`.

    Raises:
        FlowfieldsError: for any other name (ReLU-like activations are refused: CNF
            likelihoods and divergence-based losses need second derivatives).
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise FlowfieldsError(
            f"activation: got {name!r}, expected one of {', '.join(ACTIVATIONS)} "
            "(smooth activations only: divergences and CNF training need second derivatives)."
        )
    return ACTIVATIONS[name]()


_make_activation = activation  # mlp's argument ``activation`` shadows the builder's name


def _positive_int(value: object, name: str) -> None:
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        name,
        value,
        "an integer >= 1",
    )


def mlp(
    n_in: int,
    n_out: int | None,
    hidden: int,
    depth: int,
    activation: str = "silu",
    *,
    bias_out: bool = True,
) -> nn.Sequential:
    """A multi-layer perceptron as one ``nn.Sequential``.

    The layers are ``Linear(n_in, hidden), act, [Linear(hidden, hidden), act] * (depth - 1)``
    followed, unless ``n_out`` is None, by ``Linear(hidden, n_out)``. Layers are created (and
    so initialised from torch's RNG) in that order, and the ``Sequential`` indices are the
    state_dict keys (``0.weight``, ``2.weight``, ...): a seeded build is reproducible.

    Args:
        n_in: input features.
        n_out: output features, or None for a trunk that ends with the last activation
            (output width ``hidden``), e.g. to read its features out by hand.
        hidden: width of every hidden layer.
        depth: number of hidden layers (``Linear`` + activation pairs), >= 1.
        activation: a name from :data:`ACTIVATIONS`.
        bias_out: whether the output layer has a bias (a potential whose constant does not
            matter can drop it).

    Shapes:
        (..., n_in) -> (..., n_out) (or (..., hidden) when ``n_out`` is None).

    Raises:
        FlowfieldsError: non-positive sizes or an unknown activation.
    """
    _positive_int(n_in, "n_in")
    _positive_int(hidden, "hidden")
    _positive_int(depth, "depth")
    if n_out is not None:
        _positive_int(n_out, "n_out")
    _make_activation(activation)  # validate the name before creating any layer
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), _make_activation(activation)]
        width = hidden
    if n_out is not None:
        layers.append(nn.Linear(width, n_out, bias=bias_out))
    return nn.Sequential(*layers)
