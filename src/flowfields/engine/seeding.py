"""Seeding and capture / restore of every random number generator the training loop touches."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from flowfields.errors import check

__all__ = ["get_rng_state", "seed_everything", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: a non-negative integer below 2**32.

    Raises:
        FlowfieldsError: if ``seed`` is not such an integer.

    Example:
        >>> seed_everything(0)
    """
    check(
        isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32,
        "seed",
        seed,
        "an integer in [0, 2**32)",
    )
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global generator is what we seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_state() -> dict[str, Any]:
    """Snapshot of every global RNG: torch CPU, torch CUDA (all devices), NumPy, Python.

    Returns:
        A dict of plain tensors / tuples that ``torch.save`` can store and
        :func:`set_rng_state` restores.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (
            str(kind),
            torch.from_numpy(np.asarray(keys).copy()),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "python": random.getstate(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNGs captured by :func:`get_rng_state`.

    Args:
        state: the dict returned by :func:`get_rng_state`.
    """
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(cuda[i], i)
