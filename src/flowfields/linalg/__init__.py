"""Shared linear algebra: implicit differentiation of linear systems (real and complex), and
k-means clustering (:func:`kmeans`), and matrix-free Krylov methods over batches of SPD
operators (:mod:`flowfields.linalg.krylov`: CG, Lanczos, SLQ log-det, the CG log-det gradient
surrogate)."""

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
from flowfields.linalg.krylov import (
    CGResult,
    LanczosResult,
    conjugate_gradient,
    lanczos,
    logdet_surrogate,
    rademacher,
    slq_logdet,
)

__all__ = [
    "KMEANS_INITS",
    "METHODS",
    "CGResult",
    "KMeansResult",
    "LanczosResult",
    "SingularSystemError",
    "check_pivots",
    "conjugate_gradient",
    "implicit_linear_solve",
    "kmeans",
    "krylov_solver",
    "lanczos",
    "logdet_surrogate",
    "rademacher",
    "replace_row",
    "slq_logdet",
    "solve",
    "sparse_lu_solver",
]
