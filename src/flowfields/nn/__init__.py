"""Neural vector fields ``v(t, x)``: MLPs with a time embedding and a small U-Net.

The shared building blocks live here once: :data:`ACTIVATIONS` (the one activation table),
:func:`activation`, :func:`mlp` (the one MLP builder) and :func:`broadcast_time` (the one
time-broadcast helper).
Input-convex networks (:class:`ICNN`, :class:`PICNN`, :class:`ActNorm`) live in
:mod:`flowfields.nn.icnn`.

Every network here follows the flowfields convention ``v(t, x)`` with ``t`` a float, a 0-d,
(1,) or (B,) tensor (t in [0, 1], noise at 0, data at 1) and ``x`` of shape (B, *dims);
:func:`as_field` adapts any other module once, here, rather than in each paper package.
"""

from flowfields.nn.divfree import DivFreeMatrixField, DivFreeVectorField, PeriodicFeatures
from flowfields.nn.flat import FlatField
from flowfields.nn.icnn import (
    CONVEX_ACTIVATIONS,
    ICNN,
    PICNN,
    ActNorm,
    PositiveLinear,
    convex_activation,
    gaussian_softplus,
)
from flowfields.nn.layers import ACTIVATIONS, activation, mlp
from flowfields.nn.mlp_field import MLPField
from flowfields.nn.time import Field, TimeEmbedding, as_field, broadcast_time
from flowfields.nn.unet import UNet

__all__ = [
    "ACTIVATIONS",
    "CONVEX_ACTIVATIONS",
    "ICNN",
    "PICNN",
    "ActNorm",
    "DivFreeMatrixField",
    "DivFreeVectorField",
    "Field",
    "FlatField",
    "MLPField",
    "PeriodicFeatures",
    "PositiveLinear",
    "TimeEmbedding",
    "UNet",
    "activation",
    "as_field",
    "broadcast_time",
    "convex_activation",
    "gaussian_softplus",
    "mlp",
]
