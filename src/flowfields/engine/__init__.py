"""Training engine: seeded loop with EMA, atomic checkpoints + bit-for-bit resume, DDP.

Main entry point: :func:`fit`. Helpers: :func:`seed_everything`, :func:`resolve_device`,
:func:`set_threads`, checkpoint I/O (:func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`load_weights`) and the :class:`EMA` of a model's weights.

Example:
    >>> from flowfields.engine import fit
    >>> def loss_fn(model, step):          # draws its batch from torch's global RNG
    ...     x = torch.randn(512, 2)
    ...     return ((model(x) - x.sin()) ** 2).mean()
    >>> res = fit(net, loss_fn, steps=2000, checkpoint="run/train.pt", resume=True)
    >>> res.ema, res.losses[-1], res.wall_s

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
from flowfields.engine.loop import FitResult, fit
from flowfields.engine.seeding import get_rng_state, seed_everything, set_rng_state
from flowfields.engine.weights import load_weights

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_THREADS",
    "EMA",
    "FitResult",
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
