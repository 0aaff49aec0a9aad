"""The posterior drift network ``NN_phi(t, w)`` of the SDE-BNN."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_shape
from flowfields.nn import activation as make_activation

__all__ = ["PosteriorDrift"]


class PosteriorDrift(nn.Module):
    """The variational drift correction ``NN_phi(t, w)``: posterior drift = prior drift + NN.

    In Xu et al., "Infinitely Deep Bayesian Neural Networks with Stochastic Differential
    Equations" (arXiv:2102.06559), the approximate posterior over the weight path is
    ``dw = (-theta w + NN_phi(t, w)) dt + sigma dB``. ``NN_phi`` is an MLP on ``[w, t]``
    whose last layer is zero-initialised, so that at initialisation the posterior equals the
    prior and the KL between them is exactly 0. The hidden layers can be narrow (the paper's
    own code uses bottlenecks of width 1 to 64): the input and output layers cost
    ``P x hidden`` weights each.

    Args:
        n_weights: P, the number of weights of the network whose weights diffuse.
        hidden: hidden widths (at least one layer).
        activation: name of a smooth activation (see :data:`flowfields.nn.ACTIVATIONS`).

    Shapes:
        forward(t, w): t a float or 0-d tensor (one depth for all samples), w (S, P) ->
        (S, P).

    Example:
        >>> drift = PosteriorDrift(5, hidden=(8,))
        >>> float(drift(0.3, torch.randn(4, 5)).abs().max())  # zero at initialisation
        0.0
    """

    def __init__(
        self, n_weights: int, hidden: Sequence[int] = (32,), activation: str = "tanh"
    ) -> None:
        super().__init__()
        check(
            isinstance(n_weights, int) and not isinstance(n_weights, bool) and n_weights >= 1,
            "n_weights",
            n_weights,
            "an integer >= 1",
        )
        hidden = tuple(hidden)
        check(
            len(hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in hidden),
            "hidden",
            hidden,
            "a non-empty sequence of positive integers",
        )
        self.n_weights = n_weights
        sizes = (n_weights + 1, *hidden)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), make_activation(activation)]
        last = nn.Linear(sizes[-1], n_weights)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor | float, w: Tensor) -> Tensor:
        check_shape(w, "w", ndim=2, last=self.n_weights)
        t_col = torch.as_tensor(t, dtype=w.dtype, device=w.device).reshape(-1, 1)
        return self.net(torch.cat([w, t_col.expand(w.shape[0], 1)], dim=-1))
