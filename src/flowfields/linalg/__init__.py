"""Shared linear algebra: implicit differentiation of linear systems (real and complex)."""

from flowfields.linalg.implicit import (
    METHODS,
    SingularSystemError,
    implicit_linear_solve,
    krylov_solver,
    replace_row,
    solve,
    sparse_lu_solver,
)

__all__ = [
    "METHODS",
    "SingularSystemError",
    "implicit_linear_solve",
    "krylov_solver",
    "replace_row",
    "solve",
    "sparse_lu_solver",
]
