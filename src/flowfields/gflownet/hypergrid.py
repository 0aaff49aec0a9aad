"""HyperGrid: the standard GFlowNet benchmark environment (Bengio et al. 2021, sec. 4.1).

States are points of ``{0, ..., H-1}^D``, ``s0`` the origin; forward action ``i < D`` adds 1 to
coordinate ``i`` (allowed while it is below ``H - 1``), action ``D`` exits (always allowed, so
every state is terminal); backward action ``i`` subtracts 1 from coordinate ``i``. The reward,
with ``a_i = |x_i / (H - 1) - 1/2|``,

    R(x) = r0 + r1 prod_i [0.25 < a_i <= 0.5] + r2 prod_i [0.3 < a_i < 0.4],

factorises by coordinate, so ``Z = r0 H^D + r1 (sum_j [.])^D + r2 (sum_j [.])^D`` exactly
(:meth:`HyperGrid.log_partition`).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowfields.errors import check
from flowfields.gflownet.env import DAGEnv

__all__ = ["HyperGrid"]


class HyperGrid(DAGEnv):
    """The ``D``-dimensional grid of side ``H`` with the standard multi-mode reward.

    Args:
        ndim: dimension ``D`` >= 1.
        height: side ``H`` >= 2.
        r0, r1, r2: reward constants; ``r0 > 0`` (every log-reward finite), ``r1, r2 >= 0``.

    Example:
        >>> env = HyperGrid(2, 8)
        >>> round(math.exp(env.log_partition()), 6)
        22.4
    """

    def __init__(
        self, ndim: int, height: int, r0: float = 0.1, r1: float = 0.5, r2: float = 2.0
    ) -> None:
        check(isinstance(ndim, int) and ndim >= 1, "ndim", ndim, "an integer >= 1")
        check(isinstance(height, int) and height >= 2, "height", height, "an integer >= 2")
        check(
            isinstance(r0, (int, float)) and r0 > 0 and math.isfinite(r0),
            "r0",
            r0,
            "a finite float > 0 (log R is taken at every state)",
        )
        for name, value in (("r1", r1), ("r2", r2)):
            check(
                isinstance(value, (int, float)) and value >= 0 and math.isfinite(value),
                name,
                value,
                "a finite float >= 0",
            )
        self.ndim, self.height = ndim, height
        self.r0, self.r1, self.r2 = float(r0), float(r1), float(r2)
        self.state_dim = ndim
        self.n_actions = ndim + 1
        self.n_back_actions = ndim
        self.max_length = ndim * (height - 1) + 1
        self.feature_dim = ndim * height
        self._strides = torch.tensor([height**k for k in reversed(range(ndim))])

    def __repr__(self) -> str:
        return (
            f"HyperGrid(ndim={self.ndim}, height={self.height}, r0={self.r0}, r1={self.r1}, "
            f"r2={self.r2})"
        )

    def initial(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        return torch.zeros(batch, self.ndim, dtype=torch.long, device=device)

    def is_initial(self, states: Tensor) -> Tensor:
        return (states == 0).all(-1)

    def forward_mask(self, states: Tensor) -> Tensor:
        grow = states < self.height - 1
        return torch.cat([grow, torch.ones_like(grow[:, :1])], dim=1)

    def backward_mask(self, states: Tensor) -> Tensor:
        return states > 0

    def _step(self, states: Tensor, actions: Tensor) -> Tensor:
        return states + F.one_hot(actions, self.ndim)

    def _backward_step(self, states: Tensor, back_actions: Tensor) -> tuple[Tensor, Tensor]:
        return states - F.one_hot(back_actions, self.ndim), back_actions

    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        return actions

    def _indicators(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        a = (coords.double() / (self.height - 1) - 0.5).abs()
        return (a > 0.25) & (a <= 0.5), (a > 0.3) & (a < 0.4)

    def reward(self, x: Tensor) -> Tensor:
        """``R(x)``, ``(B,)`` float64."""
        self._check_states(x, "x")
        outer, ring = self._indicators(x)
        return self.r0 + self.r1 * outer.all(-1).double() + self.r2 * ring.all(-1).double()

    def _log_reward(self, x: Tensor) -> Tensor:
        return self.reward(x).log()

    def log_partition(self) -> float:
        """``log Z = log sum_x R(x)``, in closed form (the reward factorises by coordinate)."""
        outer, ring = self._indicators(torch.arange(self.height))
        d = self.ndim
        z = (
            self.r0 * self.height**d
            + self.r1 * float(outer.sum()) ** d
            + self.r2 * float(ring.sum()) ** d
        )
        return math.log(z)

    def features(self, states: Tensor) -> Tensor:
        """K-hot encoding: one one-hot of size ``H`` per coordinate, ``(B, D * H)``."""
        return F.one_hot(states, self.height).flatten(1).float()

    def all_states(self) -> tuple[Tensor, Tensor]:
        grid = torch.tensor(list(itertools.product(range(self.height), repeat=self.ndim)))
        levels = grid.sum(-1)
        order = torch.argsort(levels, stable=True)
        return grid[order], levels[order]

    def index(self, states: Tensor) -> Tensor:
        # rows of all_states are sorted by level; map the row-major index through that order
        if not hasattr(self, "_row_of"):
            grid, _ = self.all_states()
            row_of = torch.empty(grid.shape[0], dtype=torch.long)
            row_of[(grid * self._strides).sum(-1)] = torch.arange(grid.shape[0])
            self._row_of = row_of
        flat = (states.cpu() * self._strides).sum(-1)
        return self._row_of[flat].to(states.device)
