"""Training engine: seeded loop with EMA, atomic checkpoints + bit-for-bit resume, DDP.

Main entry point: :func:`fit`. Helpers: :func:`seed_everything`, :func:`resolve_device`,
:func:`set_threads`, checkpoint I/O (:func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`load_weights`) and the :class:`EMA` of a model's weights.
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
