"""Riemannian manifolds for flows: the :class:`Manifold` contract and its instances.

:class:`Euclidean` (R^d), :class:`Sphere` (S^n in R^(n+1)), :class:`FlatTorus` (T^d as
angles, period 2 pi), :class:`Product`; each with ``projx``, ``proju``, ``expmap``,
``logmap``, ``dist``, ``inner``, ``retraction`` (the ODE stepper's hook), uniform
``random_base(n)`` and ``base_log_prob(x)``, ``dim`` and ``ambient_dim``, and
``check_point`` (points off the manifold, the wrong ambient dimension or NaN raise
:class:`~flowfields.errors.FlowfieldsError`). :class:`ManifoldBase` wraps the base density as
a density model; :func:`circle_quadrature`, :func:`sphere2_quadrature` and
:func:`torus_quadrature` integrate on S^1, S^2 and T^d.

Reference: Ben-Hamu et al., "Matching Normalizing Flows and Probability Paths on Manifolds",
ICML 2022 (arXiv:2207.04711).
"""

from flowfields.manifolds.base import Euclidean, Manifold, point_tolerance, tiny
from flowfields.manifolds.product import Product
from flowfields.manifolds.quadrature import (
    circle_quadrature,
    sphere2_quadrature,
    torus_quadrature,
)
from flowfields.manifolds.sphere import Sphere, sphere_log_area
from flowfields.manifolds.torus import FlatTorus, wrap
from flowfields.manifolds.uniform import ManifoldBase

__all__ = [
    "Euclidean",
    "FlatTorus",
    "Manifold",
    "ManifoldBase",
    "Product",
    "Sphere",
    "circle_quadrature",
    "point_tolerance",
    "sphere2_quadrature",
    "sphere_log_area",
    "tiny",
    "torus_quadrature",
    "wrap",
]
