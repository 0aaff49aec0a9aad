"""Loading trained weights from a training checkpoint into a model."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from flowfields.engine.checkpoint import load_latest_checkpoint
from flowfields.errors import CheckpointError

__all__ = ["load_weights"]


def load_weights(
    path: str | os.PathLike, model: nn.Module, *, ema: bool = True, map_location: Any = "cpu"
) -> nn.Module:
    """Load the weights of a :func:`~flowfields.engine.fit` checkpoint into ``model``.

    Args:
        path: the checkpoint (its previous copy is used if it is missing or corrupt).
        model: a module of the same architecture; loaded in place and put in eval mode.
        ema: use the EMA weights when the checkpoint has them (else the trained weights).
        map_location: passed to ``torch.load``.

    Returns:
        ``model``.

    Raises:
        CheckpointError: no readable checkpoint, or weights that do not fit ``model``.
    """
    found = load_latest_checkpoint(path, map_location=map_location)
    if found is None:
        raise CheckpointError(f"checkpoint: got {str(path)!r}, expected an existing file.")
    state, read_from = found
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint: {str(read_from)!r} does not fit {type(model).__name__} "
            f"({str(err).splitlines()[0][:200]})."
        ) from err
    return model.eval()
