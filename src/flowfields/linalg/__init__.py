"""Shared linear algebra: implicit differentiation of linear systems (real and complex), and
k-means clustering (:func:`kmeans`)."""

from flowfields.linalg.implicit import (
    METHODS,
    SingularSystemError,
    check_pivots,
    implicit_linear_solve,
    krylov_solver,
    replace_row,
    solve,
    sparse_lu_solver,
)
from flowfields.linalg.kmeans import KMEANS_INITS, KMeansResult, kmeans

__all__ = [
    "KMEANS_INITS",
    "METHODS",
    "KMeansResult",
    "SingularSystemError",
    "check_pivots",
    "implicit_linear_solve",
    "kmeans",
    "krylov_solver",
    "replace_row",
    "solve",
    "sparse_lu_solver",
]
