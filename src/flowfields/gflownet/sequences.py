"""Enumerable environments of the unification (Zhang et al., arXiv:2209.02606, sec. 3).

- :class:`BitSequences`: binary strings of length ``n`` built left to right. Every state has
  one parent, so the DAG is a tree, ``P_B == 1`` and a GFlowNet is an autoregressive model:
  the ELBO equals the log-likelihood and the TBC penalty vanishes.
- :class:`LayeredDAG`: ``s0 -> z_1 -> ... -> z_{L-1} -> x`` with ``z_l`` in
  ``{0, ..., K_l - 1}``: ``P_F`` is a hierarchical decoder (the prior ``P_F(z_1 | s0)`` at the
  top), a learned ``P_B`` a Markov encoder ``q(z_{l-1} | z_l)``: a discrete hierarchical VAE
  with everything enumerable.

Both take the terminal log-rewards as a table (``log_rewards[k]`` for the ``k``-th object).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from flowfields.errors import check, check_finite, check_shape
from flowfields.gflownet.env import DAGEnv

__all__ = ["BitSequences", "LayeredDAG"]


def _as_log_rewards(log_rewards: Tensor, size: int) -> Tensor:
    check_shape(log_rewards, "log_rewards", ndim=1)
    check(log_rewards.shape[0] == size, "log_rewards", log_rewards, f"a tensor of size {size}")
    check_finite(log_rewards, "log_rewards")
    return log_rewards.detach().double().cpu()


class BitSequences(DAGEnv):
    """Strings in ``{0, 1}^n`` built by appending bits: a tree-shaped DAG.

    States are ``(n,)`` vectors with ``-1`` in the unfilled positions. Forward actions:
    append 0, append 1, exit (only at full length); one backward action (drop the last bit).

    Args:
        n: string length >= 1.
        log_rewards: ``(2^n,)`` log-rewards, indexed by the string read as a binary number
            (first bit most significant); a log-probability table for data mode.
    """

    def __init__(self, n: int, log_rewards: Tensor) -> None:
        check(isinstance(n, int) and 1 <= n <= 16, "n", n, "an integer in [1, 16]")
        self.n = n
        self.table = _as_log_rewards(log_rewards, 2**n)
        self.state_dim, self.n_actions, self.n_back_actions = n, 3, 1
        self.max_length, self.feature_dim = n + 1, 3 * n
        self._weights = torch.tensor([2 ** (n - 1 - k) for k in range(n)])

    def _length(self, states: Tensor) -> Tensor:
        return (states >= 0).sum(-1)

    def initial(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        return torch.full((batch, self.n), -1, dtype=torch.long, device=device)

    def is_initial(self, states: Tensor) -> Tensor:
        return self._length(states) == 0

    def forward_mask(self, states: Tensor) -> Tensor:
        full = (self._length(states) == self.n)[:, None]
        return torch.cat([~full, ~full, full], dim=1)

    def backward_mask(self, states: Tensor) -> Tensor:
        return (self._length(states) > 0)[:, None]

    def _step(self, states: Tensor, actions: Tensor) -> Tensor:
        out = states.clone()
        rows = torch.arange(states.shape[0], device=states.device)
        out[rows, self._length(states)] = actions
        return out

    def _backward_step(self, states: Tensor, back_actions: Tensor) -> tuple[Tensor, Tensor]:
        out = states.clone()
        rows = torch.arange(states.shape[0], device=states.device)
        last = self._length(states) - 1
        bits = states[rows, last]
        out[rows, last] = -1
        return out, bits

    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        return torch.zeros_like(actions)

    def code(self, x: Tensor) -> Tensor:
        """The binary number of each full string ``x``, ``(B,)`` long."""
        return (x.clamp(min=0).cpu() * self._weights).sum(-1).to(x.device)

    def _log_reward(self, x: Tensor) -> Tensor:
        return self.table.to(x.device)[self.code(x)]

    def log_partition(self) -> float:
        """``log sum_x R(x)``."""
        return float(torch.logsumexp(self.table, 0))

    def features(self, states: Tensor) -> Tensor:
        return F.one_hot(states + 1, 3).flatten(1).float()

    def all_states(self) -> tuple[Tensor, Tensor]:
        rows, levels = [], []
        for length in range(self.n + 1):
            for k in range(2**length):
                bits = [(k >> (length - 1 - j)) & 1 for j in range(length)]
                rows.append(bits + [-1] * (self.n - length))
                levels.append(length)
        return torch.tensor(rows), torch.tensor(levels)

    def index(self, states: Tensor) -> Tensor:
        length = self._length(states).cpu()
        value = (states.clamp(min=0).cpu() * self._weights).sum(-1) >> (self.n - length)
        return (2**length - 1 + value).to(states.device)


class LayeredDAG(DAGEnv):
    """``s0 -> z_1 -> ... -> z_{L-1} -> x``: a discrete hierarchical VAE as a GFlowNet.

    States are ``(layer, value)``; ``s0 = (0, 0)``; layer ``l`` holds ``sizes[l - 1]`` values
    and the last layer is ``x``. Forward action ``j`` moves to value ``j`` of the next layer,
    the exit is allowed only in the last layer; backward action ``j`` moves to value ``j`` of
    the previous layer (to ``s0`` from layer 1, by action 0).

    Args:
        sizes: ``(K_1, ..., K_L)``, each >= 1, ``L >= 1``.
        log_rewards: ``(K_L,)`` log-rewards of the objects ``x``.
    """

    def __init__(self, sizes: tuple[int, ...] | list[int], log_rewards: Tensor) -> None:
        sizes = tuple(sizes)
        check(
            len(sizes) >= 1 and all(isinstance(k, int) and k >= 1 for k in sizes),
            "sizes",
            sizes,
            "a non-empty tuple of integers >= 1",
        )
        self.sizes = sizes
        self.layers = len(sizes)
        self.table = _as_log_rewards(log_rewards, sizes[-1])
        self.width = max(sizes)
        self.state_dim = 2
        self.n_actions = self.width + 1
        self.n_back_actions = max((1, *sizes[:-1]))
        self.max_length = self.layers + 1
        self.feature_dim = self.layers + 1 + self.width
        # sizes by layer, layer 0 (s0) has one value
        self._size = torch.tensor((1, *sizes))

    def initial(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        return torch.zeros(batch, 2, dtype=torch.long, device=device)

    def is_initial(self, states: Tensor) -> Tensor:
        return states[:, 0] == 0

    def forward_mask(self, states: Tensor) -> Tensor:
        layer = states[:, 0]
        last = layer == self.layers
        nxt = self._size.to(states.device)[(layer + 1).clamp(max=self.layers)]
        j = torch.arange(self.width, device=states.device)
        move = (j[None, :] < nxt[:, None]) & ~last[:, None]
        return torch.cat([move, last[:, None]], dim=1)

    def backward_mask(self, states: Tensor) -> Tensor:
        layer = states[:, 0]
        prev = self._size.to(states.device)[(layer - 1).clamp(min=0)]
        j = torch.arange(self.n_back_actions, device=states.device)
        return (j[None, :] < prev[:, None]) & (layer > 0)[:, None]

    def _step(self, states: Tensor, actions: Tensor) -> Tensor:
        return torch.stack([states[:, 0] + 1, actions], dim=1)

    def _backward_step(self, states: Tensor, back_actions: Tensor) -> tuple[Tensor, Tensor]:
        return torch.stack([states[:, 0] - 1, back_actions], dim=1), states[:, 1].clone()

    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        return states[:, 1].clone()

    def _log_reward(self, x: Tensor) -> Tensor:
        return self.table.to(x.device)[x[:, 1]]

    def features(self, states: Tensor) -> Tensor:
        return torch.cat(
            [F.one_hot(states[:, 0], self.layers + 1), F.one_hot(states[:, 1], self.width)], 1
        ).float()

    def all_states(self) -> tuple[Tensor, Tensor]:
        rows = [
            (layer, v) for layer in range(self.layers + 1) for v in range(int(self._size[layer]))
        ]
        states = torch.tensor(rows)
        return states, states[:, 0].clone()

    def index(self, states: Tensor) -> Tensor:
        offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), self._size]), 0)
        return (offsets[states[:, 0].cpu()] + states[:, 1].cpu()).to(states.device)

    def log_partition(self) -> float:
        """``log sum_x R(x)``."""
        return float(torch.logsumexp(self.table, 0))
