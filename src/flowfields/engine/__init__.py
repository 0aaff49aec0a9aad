"""Training engine: a train state of many models and optimizers, one seeded loop, atomic
checkpoints with bit-for-bit resume, EMA, the NaN/Inf guard, DDP.

Main entry points: :class:`TrainState` and :func:`fit`. Helpers: :func:`seed_everything`,
:func:`resolve_device`, :func:`set_threads`, checkpoint I/O (:func:`save_checkpoint`,
:func:`load_checkpoint`, :func:`load_weights`), the :class:`EMA` of a model's weights and
:class:`GeneratorState` (a private ``torch.Generator`` as checkpointed extra state).

Example (two modules, two optimizers, the order of updates chosen by the step function):
    >>> import torch
    >>> from torch import nn
    >>> from flowfields.engine import TrainState, fit
    >>> f, g = nn.Linear(2, 2), nn.Linear(2, 2)
    >>> opts = {"f": torch.optim.Adam(f.parameters()), "g": torch.optim.SGD(g.parameters(), 0.1)}
    >>> state = TrainState({"f": f, "g": g}, opts, ema={"f": 0.99})
    >>> def step_fn(state, step):          # draws its batch from torch's global RNG
    ...     x = torch.randn(64, 2)
    ...     loss_f = state.update("f", (state["f"](x) - x.sin()).pow(2).mean())
    ...     loss_g = state.update("g", (state["g"](x) - state["f"](x).detach()).pow(2).mean())
    ...     return {"loss_f": loss_f, "loss_g": loss_g}
    >>> res = fit(state, step_fn, steps=30, progress=False)
    >>> len(state.history["loss_f"]), state.step
    (30, 30)

The same code runs data-parallel under ``torchrun`` (gloo on CPU, nccl on GPU)::

    torchrun --standalone --nproc_per_node=2 -m flowfields run NAME --out runs/NAME/ddp

For bit-for-bit resume, draw randomness from the global RNGs (torch, NumPy, ``random``),
not from private ``torch.Generator`` objects, which the engine cannot see.
"""

from flowfields.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
    state_digest,
)
from flowfields.engine.device import DEFAULT_THREADS, resolve_device, set_threads
from flowfields.engine.distributed import (
    init_distributed,
    is_distributed,
    is_main_process,
    rank,
    world_size,
)
from flowfields.engine.ema import EMA
from flowfields.engine.loop import FitResult, StepFn, fit
from flowfields.engine.seeding import get_rng_state, seed_everything, set_rng_state
from flowfields.engine.state import BestRecord, GeneratorState, Stateful, TrainState
from flowfields.engine.weights import load_weights

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_THREADS",
    "EMA",
    "BestRecord",
    "FitResult",
    "GeneratorState",
    "Stateful",
    "StepFn",
    "TrainState",
    "fit",
    "get_rng_state",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_latest_checkpoint",
    "load_weights",
    "previous_path",
    "rank",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "set_threads",
    "state_digest",
    "world_size",
]
