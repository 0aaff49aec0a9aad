"""Continuous-time sequence compression with a learned discretization: a real codec.

Chen, Le, Muckley, Nickel, Ullrich, "Latent Discretization for Continuous-time Sequence
Compression" (arXiv:2212.13659). Needs the ``compress`` extra (``constriction``) to code.

- :class:`LatentDiscretization` (:mod:`.model`): encoder, learned discretization
  (integrate-and-fire on the frame grid, straight-through), OU latent prior, OU bridge
  decoder; ``loss(x, times, beta)`` is distortion + beta x the coder's bits.
- :class:`Codec` (:mod:`.codec`): ``encode(frames, fps=) -> bytes``, ``decode(data,
  times=None)``; baselines by ``schedule="every"`` / ``"uniform"``.
- :mod:`.entropy`: the floored tables (latents, gaps) and their bits.
"""

from flowfields.compression.codec import MAGIC, SCHEDULES, Codec, Decoded
from flowfields.compression.entropy import (
    FLOOR,
    gap_bits,
    gap_table,
    gaussian_bits,
    gaussian_table,
)
from flowfields.compression.model import LatentDiscretization, Plan, bridge_latents, neighbours

__all__ = [
    "FLOOR",
    "MAGIC",
    "SCHEDULES",
    "Codec",
    "Decoded",
    "LatentDiscretization",
    "Plan",
    "bridge_latents",
    "gap_bits",
    "gap_table",
    "gaussian_bits",
    "gaussian_table",
    "neighbours",
]
