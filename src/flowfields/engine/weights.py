"""Loading trained weights from a training checkpoint into a model."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from flowfields.engine.checkpoint import load_latest_checkpoint
from flowfields.errors import CheckpointError

__all__ = ["load_weights"]


def load_weights(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    name: str = "model",
    ema: bool = True,
    map_location: Any = "cpu",
) -> nn.Module:
    """Load the weights of module ``name`` of a :func:`~flowfields.engine.fit` checkpoint.

    Args:
        path: the checkpoint (its previous copy is used if it is missing or corrupt).
        model: a module of the same architecture; loaded in place and put in eval mode.
        name: which module of the train state (``"model"`` for the one-model shorthand).
        ema: use the module's EMA weights when the checkpoint has them (else the trained ones).
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
    train_state = state.get("train_state")
    if not isinstance(train_state, dict) or name not in train_state.get("modules", {}):
        raise CheckpointError(
            f"checkpoint: {str(read_from)!r} holds no module {name!r} of a flowfields train "
            "state (expected a checkpoint written by flowfields.engine.fit)."
        )
    emas = train_state.get("emas", {})
    weights = emas[name] if ema and name in emas else train_state["modules"][name]
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint: {str(read_from)!r} does not fit {type(model).__name__} "
            f"({str(err).splitlines()[0][:200]})."
        ) from err
    return model.eval()
