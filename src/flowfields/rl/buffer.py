"""A replay buffer of transitions that checkpoints with the train state.

Sampling draws indices from torch's global RNG, which :func:`flowfields.engine.fit` saves and
restores, so a resumed run samples the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowfields.errors import check

__all__ = ["Batch", "ReplayBuffer"]

_FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


@dataclass
class Batch:
    """Transitions: obs, next_obs (B, obs_dim); action (B, act_dim); reward, terminated (B,)."""

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor


class ReplayBuffer:
    """A ring buffer of ``capacity`` transitions on ``device`` (float32).

    Args:
        obs_dim, act_dim: sizes. capacity: the most transitions kept (oldest overwritten).
        device: where the storage lives.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, capacity: int, device: str | torch.device = "cpu"
    ) -> None:
        for name, v in (("obs_dim", obs_dim), ("act_dim", act_dim), ("capacity", capacity)):
            check(isinstance(v, int) and v >= 1, name, v, "a positive integer")
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        self.device = torch.device(device)
        shapes = {
            "obs": (obs_dim,),
            "action": (act_dim,),
            "reward": (),
            "next_obs": (obs_dim,),
            "terminated": (),
        }
        self.data = {k: torch.zeros((capacity, *s), device=self.device) for k, s in shapes.items()}
        self.size = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self, obs: Tensor, action: Tensor, reward: float, next_obs: Tensor, terminated: bool
    ) -> None:
        """Store one transition (obs/next_obs (obs_dim,), action (act_dim,))."""
        row = {
            "obs": obs,
            "action": action,
            "reward": torch.as_tensor(float(reward)),
            "next_obs": next_obs,
            "terminated": torch.as_tensor(float(terminated)),
        }
        for k, v in row.items():
            self.data[k][self.pos] = v
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement (torch's global RNG)."""
        check(self.size > 0, "buffer", "empty", "at least one stored transition")
        check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "int >= 1")
        idx = torch.randint(0, self.size, (batch_size,)).to(self.device)
        return Batch(**{k: self.data[k][idx] for k in _FIELDS})

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (only the filled rows), position and sizes."""
        return {
            "capacity": self.capacity,
            "size": self.size,
            "pos": self.pos,
            "data": {k: v[: self.size].clone() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same capacity and sizes)."""
        check(
            state["capacity"] == self.capacity,
            "state['capacity']",
            state["capacity"],
            f"this buffer's capacity {self.capacity}",
        )
        self.size, self.pos = int(state["size"]), int(state["pos"])
        for k, v in state["data"].items():
            self.data[k][: self.size] = v.to(self.device)
