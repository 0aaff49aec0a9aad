"""The hidden-state dynamics ``dh/dt = f(t, h; w(t))`` whose weights are a stochastic path."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowfields.errors import check, check_shape
from flowfields.nn import activation as make_activation

__all__ = ["WeightedMLP"]


class WeightedMLP(nn.Module):
    """One-hidden-layer field ``f(t, h; w) = W_2 act(W_1 [h, t] + b_1) + b_2``, weights from ``w``.

    The continuous-depth layer of Xu et al., "Infinitely Deep Bayesian Neural Networks with
    Stochastic Differential Equations" (arXiv:2102.06559): the module owns no parameters;
    its weights ``(W_1, b_1, W_2, b_2)`` are unpacked from a flat vector ``w`` of length
    :attr:`n_weights` (one row per weight sample), which the SDE-BNN evolves as a diffusion.
    Depth ``t`` enters as an extra input. Each of the S weight samples acts on the whole
    batch of B hidden states (one weight path per network sample, shared over the batch).

    Args:
        width: H, the size of the hidden state h.
        hidden: K, the width of the field's hidden layer.
        activation: name of a smooth activation.

    Shapes:
        forward(t, h, w): t a float or 0-d tensor, h (S, B, H), w (S, P) -> (S, B, H).

    Example:
        >>> f = WeightedMLP(width=3, hidden=4)
        >>> w = f.initial_weights().expand(2, -1)
        >>> f(0.0, torch.zeros(2, 5, 3), w).shape
        torch.Size([2, 5, 3])
    """

    def __init__(self, width: int, hidden: int, activation: str = "tanh") -> None:
        super().__init__()
        for name, value in (("width", width), ("hidden", hidden)):
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                name,
                value,
                "an integer >= 1",
            )
        self.width = width
        self.hidden = hidden
        self.act = make_activation(activation)
        h, k = width, hidden
        self._sizes = ((h + 1) * k, k, k * h, h)
        self.n_weights = sum(self._sizes)

    def unpack(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Split ``w`` (S, P) into W_1 (S, H+1, K), b_1 (S, K), W_2 (S, K, H), b_2 (S, H)."""
        check_shape(w, "w", ndim=2, last=self.n_weights)
        w1, b1, w2, b2 = torch.split(w, list(self._sizes), dim=-1)
        s, h, k = w.shape[0], self.width, self.hidden
        return w1.reshape(s, h + 1, k), b1, w2.reshape(s, k, h), b2

    def forward(self, t: Tensor | float, h: Tensor, w: Tensor) -> Tensor:
        check_shape(h, "h", ndim=3, last=self.width)
        w1, b1, w2, b2 = self.unpack(w)
        t_col = torch.as_tensor(t, dtype=h.dtype, device=h.device).reshape(1, 1, 1)
        inp = torch.cat([h, t_col.expand(h.shape[0], h.shape[1], 1)], dim=-1)
        z = self.act(torch.baddbmm(b1.unsqueeze(1), inp, w1))
        return torch.baddbmm(b2.unsqueeze(1), z, w2)

    def initial_weights(self, generator: torch.Generator | None = None) -> Tensor:
        """A draw of initial weights ``w_0``, shape (1, P): Glorot-uniform matrices, zero biases."""
        h, k = self.width, self.hidden
        parts = []
        for fan_in, fan_out, n in ((h + 1, k, (h + 1) * k), (k, h, k * h)):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            parts.append((torch.rand(n, generator=generator) * 2 - 1) * bound)
        w1, w2 = parts
        return torch.cat([w1, torch.zeros(k), w2, torch.zeros(h)]).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"width={self.width}, hidden={self.hidden}, n_weights={self.n_weights}"
