"""Neural vector fields ``v(t, x)``: MLPs with a time embedding and a small U-Net.

Every network here follows the flowfields convention ``v(t, x)`` with ``t`` a float, a 0-d,
(1,) or (B,) tensor (t in [0, 1], noise at 0, data at 1) and ``x`` of shape (B, *dims);
:func:`as_field` adapts any other module once, here, rather than in each paper package.
"""

from flowfields.nn.divfree import DivFreeMatrixField, DivFreeVectorField, PeriodicFeatures
from flowfields.nn.flat import FlatField
from flowfields.nn.mlp import MLPField
from flowfields.nn.time import (
    ACTIVATIONS,
    Field,
    TimeEmbedding,
    activation,
    as_field,
    broadcast_time,
)
from flowfields.nn.unet import UNet

__all__ = [
    "ACTIVATIONS",
    "DivFreeMatrixField",
    "DivFreeVectorField",
    "Field",
    "FlatField",
    "MLPField",
    "PeriodicFeatures",
    "TimeEmbedding",
    "UNet",
    "activation",
    "as_field",
    "broadcast_time",
]
